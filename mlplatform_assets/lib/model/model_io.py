"""Model files: the one trust policy that decides what a skops model file may contain, and the loader.

Every model artifact the platform reads (evaluation, batch scoring, serving) goes through
:func:`load_skops_file`; every model it writes is checked by :func:`trusted_types_for` first, so a
model that could not be loaded back is never registered.

Why skops' own audit is not enough: ``skops.io.get_untrusted_types`` leaves out what skops trusts by
default (numpy ufuncs as functions, builtins as types, ...), and a node kind such as ``FunctionNode``,
``MethodNode``, ``PartialNode`` or ``OperatorFuncNode`` rebuilds a *callable* that another node
(a dict's key types, a partial, ``operator.call``) then calls while loading. Trusting whole packages
(``builtins.*``, ``numpy.*``, ``sklearn.*``) therefore lets a crafted file chain ``builtins.exec``,
``numpy.ndarray.tofile`` or a function under ``sklearn.utils`` into code execution.

So the policy reads ``schema.json`` itself, before skops builds anything or imports any named
module, and accepts a file only if

- it uses the skops protocol this platform writes (an older protocol selects older node classes);
- every node is of a kind that rebuilds data or an instance, never one that rebuilds a callable;
- every node names an exact type on the allow-list for its kind: scikit-learn estimator classes and
  the helper classes fitted pipelines hold, containers, numpy arrays/scalars/dtypes;
- every type skops itself reports as untrusted is one the policy accepted.

Model families outside scikit-learn (LightGBM, XGBoost) add their exact classes only while the family's
package is installed: their boosters' state is data (LightGBM's model text, XGBoost's raw model bytes)
that ``__setstate__`` hands to the library's own model parser, so no Python callable is ever rebuilt.

Operator-trusted plugin modules (``MLPLATFORM_TRUSTED_MODULES``, the same setting that lets a spec name
them) admit their scikit-learn estimator/transformer classes; :func:`policy_from_environment` is the one
place that turns that configuration into the policy every loader and the registration check use.

Operators can add exact *class* names (``TrustPolicy.with_extra_types``), e.g. a KD-tree for a
nearest-neighbours model. Extra classes are only ever instantiated the way estimators are (``__new__``
plus their saved state), never called; functions, metaclasses and classes from modules that start
processes, touch files or run code are refused outright.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import io
import json
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from mlplatform_assets.lib.config import ENV_TRUSTED_MODULES

SKOPS_FILE_DEFAULT = "model.skops"


class ModelFileError(Exception):
    """A model artifact cannot be loaded: wrong format, missing or unreadable file."""


class ModelTrustError(ModelFileError):
    """A model file holds something the trust policy refuses; the message names every refused type."""


class TrustedTypeConfigError(ValueError):
    """An operator-configured extra trusted type is refused (a function, a metaclass, a dangerous module)."""


# Helper classes that fitted pipelines of scikit-learn estimators contain besides the estimators.
# Exact names; each is a class (test_model_io checks it resolves to one).
_SKLEARN_HELPER_CLASSES = frozenset({
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.link.HalfLogitLink",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.AbsoluteError",
    "sklearn._loss.loss.ExponentialLoss",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfGammaLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfPoissonLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.loss.HalfTweedieLoss",
    "sklearn._loss.loss.HalfTweedieLossIdentity",
    "sklearn._loss.loss.HuberLoss",
    "sklearn._loss.loss.PinballLoss",
})
# Cython loss objects (gradient boosting); skops rebuilds them by calling the class with saved numbers.
_SKLEARN_CYTHON_LOSSES = frozenset(f"sklearn._loss._loss.Cy{name}" for name in (
    "AbsoluteError", "ExponentialLoss", "HalfBinomialLoss", "HalfGammaLoss", "HalfMultinomialLoss",
    "HalfPoissonLoss", "HalfSquaredError", "HalfTweedieLoss", "HalfTweedieLossIdentity", "HuberLoss",
    "PinballLoss",
))
_PRIMITIVE_CLASSES = frozenset({"builtins.str", "builtins.int", "builtins.float", "builtins.bool"})

# Node kinds that rebuild a callable (or call a saved callable while loading): never loaded.
_CALLABLE_NODE_KINDS = {
    "FunctionNode": "a function",
    "MethodNode": "a bound method",
    "PartialNode": "a functools.partial",
    "OperatorFuncNode": "an operator function (attrgetter/itemgetter/methodcaller/call)",
    "ConstructorFromReduceNode": "a constructor call from __reduce__",
}

# Model families outside scikit-learn: package -> node kind -> exact type names. Applied only when the
# package is installed (a family that is not installed cannot be loaded anyway, and its names then mean
# nothing). Every ObjectNode class here is rebuilt by ``__new__`` plus its saved state.
MODEL_FAMILY_TYPES: dict[str, dict[str, frozenset[str]]] = {
    "lightgbm": {
        "ObjectNode": frozenset({"lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRegressor",
                                 "lightgbm.basic.Booster"}),
        # Booster.best_score is a defaultdict(OrderedDict); see _DEFAULTDICT_FACTORIES.
        "DefaultDictNode": frozenset({"collections.defaultdict"}),
        "TypeNode": frozenset({"collections.OrderedDict"}),
    },
    "xgboost": {
        "ObjectNode": frozenset({"xgboost.sklearn.XGBClassifier", "xgboost.sklearn.XGBRegressor",
                                 "xgboost.core.Booster"}),
        "BytearrayNode": frozenset({"builtins.bytearray"}),  # the booster's serialized model
    },
}
# A defaultdict's factory is set (not called) while loading and called later for a missing key, so only
# plain container types may be factories: any other factory is refused like a function.
_DEFAULTDICT_FACTORIES = frozenset({"collections.OrderedDict"})

# Modules whose classes an operator may not add: they start processes, open files or sockets, import
# or run code, or (de)serialize with pickle. Matched on the first component of the module path.
DANGEROUS_MODULES = frozenset({
    "asyncio", "bdb", "builtins", "bz2", "cffi", "cloudpickle", "code", "codecs", "codeop", "concurrent",
    "copyreg", "ctypes", "dbm", "dill", "fileinput", "ftplib", "functools", "glob", "gzip", "http",
    "imaplib", "importlib", "inspect", "io", "joblib", "logging", "lzma", "marshal", "mmap",
    "multiprocessing", "nt", "operator", "os", "pathlib", "pdb", "pickle", "pkgutil", "platform",
    "poplib", "posix", "pty", "runpy", "sched", "selectors", "shelve", "shutil", "signal", "site",
    "skops", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "subprocess", "sys", "tarfile",
    "tempfile", "threading", "timeit", "trace", "types", "urllib", "webbrowser", "xmlrpc", "zipfile",
    "zipimport", "_io", "_pickle", "_posixsubprocess", "__main__",
})
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


@functools.lru_cache(maxsize=1)
def _sklearn_estimator_classes() -> frozenset[str]:
    """Every public scikit-learn estimator class, by exact name (classes only, as sklearn lists them)."""
    from sklearn.utils import all_estimators

    return frozenset(_type_name(cls) for _, cls in all_estimators()
                     if inspect.isclass(cls) and cls.__module__.split(".")[0] == "sklearn")


@functools.lru_cache(maxsize=1)
def _numpy_scalar_classes() -> frozenset[str]:
    """numpy's scalar classes (numpy.float64, numpy.int64, ...) under their top-level names."""
    import numpy as np

    return frozenset(f"numpy.{cls.__name__}" for cls in set(np.sctypeDict.values())
                     if getattr(np, cls.__name__, None) is cls)


def installed_model_families() -> list[str]:
    """The model families (packages in MODEL_FAMILY_TYPES) installed here; found without importing them."""
    import importlib.util

    return [family for family in MODEL_FAMILY_TYPES if importlib.util.find_spec(family) is not None]


@functools.lru_cache(maxsize=1)
def _allowed_types_by_node_kind() -> dict[str, frozenset[str]]:
    """For each node kind the policy loads: the exact type names a node of that kind may name."""
    allowed = dict(_base_types_by_node_kind())
    for family in installed_model_families():
        for kind, names in MODEL_FAMILY_TYPES[family].items():
            allowed[kind] = allowed.get(kind, frozenset()) | names
    return allowed


def _base_types_by_node_kind() -> dict[str, frozenset[str]]:
    numpy_scalars = _numpy_scalar_classes()
    return {
        "ObjectNode": _sklearn_estimator_classes() | _SKLEARN_HELPER_CLASSES,
        "TreeNode": frozenset({"sklearn.tree._tree.Tree"}),
        "LossNode": _SKLEARN_CYTHON_LOSSES,
        "DictNode": frozenset({"builtins.dict"}),
        "ListNode": frozenset({"builtins.list"}),
        "TupleNode": frozenset({"builtins.tuple"}),
        "SetNode": frozenset({"builtins.set"}),
        "SliceNode": frozenset({"builtins.slice"}),
        "BytesNode": frozenset({"builtins.bytes"}),
        "JsonNode": _PRIMITIVE_CLASSES,
        # A type saved as a value (an encoder's dtype, a dict's key types): skops calls it with data.
        "TypeNode": _PRIMITIVE_CLASSES | numpy_scalars,
        "NdArrayNode": numpy_scalars | {"numpy.ndarray"},
        "DTypeNode": frozenset({"numpy.dtype"}),
        "RandomStateNode": frozenset({"numpy.random.mtrand.RandomState"}),
        # skops itself reports a bit generator that is not a real numpy one (checked again below).
        "RandomGeneratorNode": frozenset({"numpy.random._generator.Generator"}),
    }


def _skops_protocol() -> int:
    from skops.io._protocol import PROTOCOL

    return PROTOCOL


@dataclass(frozen=True)
class TrustPolicy:
    """The allow-list plus operator-added exact class names (see :meth:`with_extra_types`) and the
    operator-trusted plugin module prefixes (see :func:`policy_from_environment`)."""

    extra_classes: frozenset[str] = frozenset()
    trusted_modules: tuple[str, ...] = ()

    @classmethod
    def with_extra_types(cls, names: Iterable[str], source: str = "extra trusted types") -> "TrustPolicy":
        """The default policy plus ``names``; raises TrustedTypeConfigError naming every refused entry.

        Each entry must be the exact dotted name of a class (``package.module.Class``) outside
        :data:`DANGEROUS_MODULES`. The module is imported to check the name really is a class, so
        names come from operator configuration only, never from a model file.
        """
        accepted, problems = set(), []
        for name in names:
            reason = _extra_type_refusal(name)
            if reason:
                problems.append(f"{name!r} {reason}")
            else:
                accepted.add(name)
        if problems:
            raise TrustedTypeConfigError(f"{source}: refused: " + "; ".join(problems))
        return cls(frozenset(accepted))

    def refusals(self, schema: Mapping[str, Any]) -> list[str]:
        """Everything in a parsed ``schema.json`` this policy refuses; empty when the file is acceptable."""
        protocol = schema.get("protocol") if isinstance(schema, Mapping) else None
        if protocol != _skops_protocol():
            return [f"skops protocol {protocol!r} (only protocol {_skops_protocol()} is loaded; "
                    "re-save the model with this platform's skops version)"]
        allowed = _allowed_types_by_node_kind()
        refused: set[str] = set()
        for node in _nodes(schema):
            kind, module, cls = node.get("__loader__"), node.get("__module__"), node.get("__class__")
            if not all(isinstance(part, str) for part in (kind, module, cls)):
                refused.add(f"malformed node {kind!r} ({module!r}.{cls!r})")
                continue
            name = f"{module}.{cls}"
            if kind == "MethodNode" and isinstance(node.get("content"), dict):
                name = f"{name}.{node['content'].get('func')}"  # the method, not just its owner's class
            if kind in _CALLABLE_NODE_KINDS:
                refused.add(f"{name} ({_CALLABLE_NODE_KINDS[kind]}: never loaded)")
            elif kind not in allowed:
                refused.add(f"{name} (node kind {kind} is not loaded)")
            elif kind == "ObjectNode" and name not in allowed[kind]:
                reason = self._object_refusal(module, name)
                if reason:
                    refused.add(name if reason is _NOT_ALLOWED else f"{name} ({reason})")
            elif name not in allowed[kind]:
                refused.add(name)
            elif kind == "DefaultDictNode" and _defaultdict_factory(node) not in _DEFAULTDICT_FACTORIES:
                refused.add(f"{name} with factory {_defaultdict_factory(node)} (only container types are "
                            "loaded as defaultdict factories)")
        return sorted(refused)

    def _object_refusal(self, module: str, name: str) -> str | None:
        """Why an instance of ``name`` (not on the built-in allow-list) is refused, or None to accept it."""
        if name in self.extra_classes:
            return None
        if _in_modules(module, self.trusted_modules):
            return _plugin_class_refusal(name)
        return _NOT_ALLOWED

    def check(self, data: bytes, what: str) -> list[str]:
        """Audit a skops file's bytes; returns the skops-level trusted list to load it with.

        Raises ModelTrustError naming every refused type (nothing in the file is built or imported
        before this passes), ModelFileError if the bytes are not a readable skops file.
        """
        import skops.io

        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                schema = json.loads(archive.read("schema.json"))
        except (zipfile.BadZipFile, KeyError, ValueError, RecursionError) as exc:
            raise ModelFileError(f"{what}: not a readable skops file ({type(exc).__name__})") from None
        refused = self.refusals(schema)
        if refused:
            hint = (f" (a custom class loads only from a module listed in {ENV_TRUSTED_MODULES}; trusted now: "
                    f"{', '.join(self.trusted_modules) or 'none'})")
            raise ModelTrustError(f"{what} contains types outside the model trust allow-list: {refused}{hint}")
        # Second gate: skops' own audit must report nothing beyond what the policy accepted above
        # (e.g. a bit generator name hidden in a Generator's state is only visible to skops).
        try:
            skops_untrusted = skops.io.get_untrusted_types(data=data)
        except Exception as exc:  # noqa: BLE001 - skops refuses malformed trees with assorted errors
            raise ModelFileError(f"{what}: skops cannot read the file: {type(exc).__name__}: {exc}") from None
        accepted = {f"{node.get('__module__')}.{node.get('__class__')}" for node in _nodes(schema)}
        unexpected = sorted(set(skops_untrusted) - accepted)
        if unexpected:
            raise ModelTrustError(f"{what} contains types outside the model trust allow-list: {unexpected}")
        return skops_untrusted


def _nodes(schema: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node state in a parsed schema: any dict with a ``__loader__`` key, wherever it sits.

    Iterative (a crafted file may nest deeply) and structure-agnostic, so no node escapes the audit
    by sitting somewhere the policy does not expect.
    """
    stack: list[Any] = [schema]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
            if "__loader__" in value:
                yield value


_NOT_ALLOWED = "not an allowed class"  # refused without further reason: listed by name alone


def _defaultdict_factory(node: Mapping[str, Any]) -> str:
    factory = node.get("content", {}).get("default_factory") if isinstance(node.get("content"), dict) else None
    if not isinstance(factory, dict) or factory.get("__loader__") != "TypeNode":
        return "(not a type)"
    return f"{factory.get('__module__')}.{factory.get('__class__')}"


def _in_modules(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@functools.lru_cache(maxsize=256)
def _plugin_class_refusal(name: str) -> str | None:
    """Why a class from a trusted plugin module is refused (not a scikit-learn estimator class), or None.

    Importing the module is acceptable: the operator trusts it, and spec validation imports it too.
    """
    module_name, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is a refused class, not a crash
        return f"cannot be imported from trusted module {module_name} ({type(exc).__name__})"
    from sklearn.base import BaseEstimator

    if not inspect.isclass(obj) or issubclass(obj, type) or not issubclass(obj, BaseEstimator):
        return "not a scikit-learn estimator or transformer class (only those load from trusted modules)"
    if _type_name(obj) != name:
        return f"an alias of {_type_name(obj)}"
    return None


def _extra_type_refusal(name: str) -> str | None:
    """Why an operator-supplied extra trusted type is refused, or None if it is an acceptable class."""
    if not isinstance(name, str) or not _DOTTED_NAME.fullmatch(name):
        return "is not a dotted class name like package.module.Class"
    module_name, _, attr = name.rpartition(".")
    root = module_name.split(".")[0]
    if root in DANGEROUS_MODULES:
        return f"is in module {root!r}, which is never trusted"
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        return f"cannot be imported ({type(exc).__name__})"
    if not inspect.isclass(obj):
        return f"is a {type(obj).__name__}, not a class: only classes can be trusted"
    if issubclass(obj, type):
        return "is a metaclass: it can create new classes"
    if _type_name(obj) != name:
        return f"is an alias of {_type_name(obj)}: list that exact name instead"
    return None


DEFAULT_POLICY = TrustPolicy()


def policy_from_environment(extra_types: Iterable[str] = (), extra_source: str = "extra trusted types",
                            environ: Mapping[str, str] | None = None) -> TrustPolicy:
    """The effective policy: built-in allow-list + installed families + ``MLPLATFORM_TRUSTED_MODULES`` plugin
    modules + ``extra_types`` (exact classes, e.g. serving's MLPLATFORM_SERVING_TRUSTED_TYPES).

    Every loader and the registration check use this, so a model trained with a plugin loads wherever the
    same configuration is in force, and is refused (naming the class and the variable) where it is not.
    Raises TrustedTypeConfigError naming the variable for a bad value.
    """
    from mlplatform_assets.lib.spec import SpecError, trusted_estimator_modules

    try:
        modules = trusted_estimator_modules(environ)
    except SpecError as exc:
        raise TrustedTypeConfigError(str(exc)) from None
    return replace(TrustPolicy.with_extra_types(extra_types, extra_source), trusted_modules=modules)


def trusted_types_for(pipeline: Any, policy: TrustPolicy | None = None) -> list[str]:
    """Save-time check: the types skops must be told to trust for this pipeline.

    Raises ModelTrustError if the pipeline holds anything the policy (default: the effective one,
    :func:`policy_from_environment`) would refuse on load, so such a model is never registered.
    """
    import skops.io

    policy = policy if policy is not None else policy_from_environment()
    return policy.check(skops.io.dumps(pipeline), f"model {type(pipeline).__name__}")


# Distributions every saved model needs, pinned from this environment (saves MLflow's slow inference).
_BASE_REQUIREMENTS = ("scikit-learn", "skops", "numpy", "pandas", "scipy")


def pip_requirements_for(pipeline: Any) -> list[str]:
    """Pinned pip requirements of a model: the base stack plus the distribution of every model family or
    plugin module whose classes the pipeline holds (e.g. ``lightgbm==4.7.0``, ``acme-features==0.1.0``)."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    dists = list(_BASE_REQUIREMENTS)
    by_module = packages_distributions()
    for obj in _pipeline_objects(pipeline):
        root = type(obj).__module__.split(".")[0]
        if root in ("sklearn", "numpy", "builtins"):
            continue
        dists.extend(by_module.get(root, []))
    out = []
    for dist in dict.fromkeys(dists):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:  # a plugin on sys.path but not installed: nothing to pin
            continue
    return out


def _pipeline_objects(obj: Any) -> Iterator[Any]:
    """``obj`` and the estimators nested in it (pipeline steps, column-transformer parts)."""
    yield obj
    for _, step in getattr(obj, "steps", []) or []:
        yield from _pipeline_objects(step)
    for part in getattr(obj, "transformers_", []) or []:
        if len(part) >= 2 and not isinstance(part[1], str):
            yield from _pipeline_objects(part[1])


def skops_path(local_dir: str | Path, flavors: Mapping[str, Any], what: str) -> Path:
    """The skops file of a downloaded MLflow sklearn model; refuses anything not saved with skops."""
    flavor = flavors.get("sklearn")
    if not flavor:
        raise ModelFileError(f"{what} has no sklearn flavor")
    fmt = flavor.get("serialization_format", "pickle")
    if fmt != "skops":
        raise ModelFileError(f"{what} is serialized with {fmt!r}; only 'skops' models are loaded "
                             "(pickle deserialization is never used)")
    file_name = flavor.get("pickled_model", SKOPS_FILE_DEFAULT)
    if not isinstance(file_name, str) or Path(file_name).name != file_name or file_name in ("", ".", ".."):
        raise ModelFileError(f"{what}: MLmodel names the model file {file_name!r}; expected a plain file name")
    return Path(local_dir) / file_name


def load_skops_file(path: str | Path, what: str, policy: TrustPolicy | None = None) -> Any:
    """Load a skops file after the policy (default: :func:`policy_from_environment`) accepted it.
    Raises ModelTrustError / ModelFileError (TrustedTypeConfigError for a bad trust configuration)."""
    import skops.io

    if policy is None:
        try:
            policy = policy_from_environment()
        except TrustedTypeConfigError as exc:
            raise ModelTrustError(f"{what}: cannot build the model trust policy: {exc}") from None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{what}: cannot read the model file: {type(exc).__name__}") from None
    trusted = policy.check(data, what)
    try:
        return skops.io.loads(data, trusted=trusted)
    except Exception as exc:  # noqa: BLE001 - any failure to build the object is a failed load
        raise ModelFileError(f"{what}: skops load failed: {type(exc).__name__}: {exc}") from exc
