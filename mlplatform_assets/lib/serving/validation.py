"""Request-body parsing and validation against an MLflow column signature.

The validator turns any accepted body into ``{column: list_of_python_values}`` plus a row
count, having checked every value against the signature, so the batcher only has to
concatenate lists and build one DataFrame. Nothing here echoes a payload value back.

Rules (see docs/serving.md):

* accepted bodies: ``dataframe_split`` (``columns`` + ``data``, optional ``index``),
  ``dataframe_records`` (list of objects), ``instances`` and ``inputs`` (list of objects, or an
  object of column -> list of values / single value). Exactly one of them; ``params`` only if
  empty/null.
* missing column: 422 unless the signature marks it optional (``required: false``), in which
  case it is filled with nulls. Unknown extra column: 422.
* numeric columns (double/float/long/integer) accept JSON numbers only (no strings, no
  booleans); integer columns accept integral numbers (``3`` or ``3.0``) within range.
  string columns accept JSON strings only (no numbers, no booleans: no silent coercion that
  would change categories). boolean columns accept true/false only.
* null: rejected for a required column; for an optional column it becomes NaN (numeric) or
  None (string/boolean).
* NaN/Infinity: the JSON parser is strict RFC 8259, so ``NaN``/``Infinity`` tokens and numbers
  overflowing a double are a 400 ``invalid_json``; there is no way to send a non-finite number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlplatform_assets.lib.serving.errors import ClientError, safe_name

_INT_BOUNDS = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
NUMERIC = ("double", "float", "long", "integer")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # double, float, long, integer, string, boolean, datetime, binary
    required: bool


def columns_from_signature(signature) -> list[Column]:
    """The input columns of an MLflow signature; raises ValueError if it is not column-based."""
    from mlflow.types.schema import ColSpec, DataType

    if signature is None or signature.inputs is None:
        raise ValueError("the model has no input signature; the service validates against it")
    inputs = signature.inputs
    if not inputs.has_input_names() or inputs.is_tensor_spec():
        raise ValueError("the model signature is not column-based")
    cols = []
    for spec in inputs.inputs:
        if not isinstance(spec, ColSpec) or not isinstance(spec.type, DataType):
            raise ValueError(f"unsupported signature column type for {spec.name!r}")
        cols.append(Column(spec.name, spec.type.name, bool(getattr(spec, "required", True))))
    return cols


def _type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "unsupported"


def _expected(kind: str) -> str:
    if kind in ("long", "integer"):
        return "an integer number"
    if kind in NUMERIC:
        return "a number"
    if kind == "boolean":
        return "true or false"
    return "a string"


class Validator:
    """Compiled from a signature once per model version; ``parse`` is called per request."""

    def __init__(self, columns: list[Column], max_rows: int):
        self.columns = columns
        self.max_rows = max_rows
        self.by_name = {c.name: c for c in columns}
        self.names = [c.name for c in columns]
        self._name_set = frozenset(self.names)

    # -- body shapes ----------------------------------------------------------------------
    def parse(self, payload) -> tuple[dict[str, list], int]:
        if not isinstance(payload, dict):
            raise ClientError(400, "invalid_body", "the body must be a JSON object with one of the keys "
                              "dataframe_split, dataframe_records, instances, inputs", None)
        keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload]
        others = [k for k in payload if k not in ("dataframe_split", "dataframe_records", "instances", "inputs", "params")]
        if others:
            raise ClientError(400, "unknown_key", f"unknown top-level key {safe_name(others[0])!r}; expected one of "
                              "dataframe_split, dataframe_records, instances, inputs", safe_name(others[0]))
        if len(keys) != 1:
            raise ClientError(400, "invalid_body", "the body must hold exactly one of dataframe_split, "
                              "dataframe_records, instances, inputs", None)
        params = payload.get("params")
        if params not in (None, {}):
            raise ClientError(400, "unsupported_params", "'params' must be empty or null: this model accepts no params", "params")
        key = keys[0]
        data = payload[key]
        if key == "dataframe_split":
            cols, n = self._split(data)
        elif isinstance(data, list):
            cols, n = self._records(data, key)
        elif isinstance(data, dict) and key in ("inputs", "instances"):
            cols, n = self._columnar(data, key)
        else:
            raise ClientError(400, "invalid_body", f"{key} must be a list of objects"
                              + (" or an object of columns" if key != "dataframe_records" else ""), key)
        return self._check(cols, n), n

    def _rows_guard(self, n: int, field: str) -> None:
        if n == 0:
            raise ClientError(422, "empty_batch", "the request holds no rows", field)
        if n > self.max_rows:
            raise ClientError(413, "too_many_rows", f"the request holds {n} rows; at most {self.max_rows} "
                              "are accepted per request", field)

    def _split(self, data):
        if not isinstance(data, dict):
            raise ClientError(400, "invalid_body", "dataframe_split must be an object with columns and data",
                              "dataframe_split")
        extra = [k for k in data if k not in ("columns", "data", "index")]
        if extra:
            raise ClientError(400, "unknown_key", f"unknown key {safe_name(extra[0])!r} in dataframe_split",
                              f"dataframe_split.{safe_name(extra[0])}")
        columns = data.get("columns")
        rows = data.get("data")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ClientError(400, "invalid_body", "dataframe_split.columns must be a list of column names",
                              "dataframe_split.columns")
        if not isinstance(rows, list):
            raise ClientError(400, "invalid_body", "dataframe_split.data must be a list of rows",
                              "dataframe_split.data")
        self._rows_guard(len(rows), "dataframe_split.data")
        if len(set(columns)) != len(columns):
            seen = set()
            dup = next(c for c in columns if c in seen or seen.add(c))
            raise ClientError(422, "duplicate_column", f"column {safe_name(dup)!r} appears more than once", safe_name(dup))
        width = len(columns)
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise ClientError(422, "invalid_row", f"row {i} of dataframe_split.data must be a list",
                                  f"dataframe_split.data[{i}]")
            if len(row) != width:
                raise ClientError(422, "invalid_row", f"row {i} of dataframe_split.data has {len(row)} values; "
                                  f"{width} columns were declared", f"dataframe_split.data[{i}]")
        index = data.get("index")
        if index is not None and (not isinstance(index, list) or len(index) != len(rows)):
            raise ClientError(422, "invalid_index", "dataframe_split.index must be a list with one entry per row",
                              "dataframe_split.index")
        if width == 0:
            cols = {}
        elif len(rows) == 1:
            cols = {c: [v] for c, v in zip(columns, rows[0])}
        else:
            cols = {c: list(vals) for c, vals in zip(columns, zip(*rows))}
        return cols, len(rows)

    def _records(self, records, key):
        self._rows_guard(len(records), key)
        names = self._name_set
        cols = {name: [] for name in self.names}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ClientError(422, "invalid_row", f"{key}[{i}] must be an object of column: value", f"{key}[{i}]")
            for k in rec:
                if k not in names:
                    raise ClientError(422, "unknown_column", f"unknown column {safe_name(k)!r} in {key}[{i}]; "
                                      f"the model expects {self._expected_cols()}", safe_name(k))
            for name, lst in cols.items():
                if name in rec:
                    lst.append(rec[name])
                elif self.by_name[name].required:
                    raise ClientError(422, "missing_column", f"required column {safe_name(name)!r} is missing "
                                      f"from {key}[{i}]", safe_name(name))
                else:
                    lst.append(None)
        return cols, len(records)

    def _columnar(self, data, key):
        n = None
        cols = {}
        for k, v in data.items():
            vals = v if isinstance(v, list) else [v]
            if n is None:
                n = len(vals)
            elif len(vals) != n:
                raise ClientError(422, "ragged_columns", f"column {safe_name(k)!r} of {key} has {len(vals)} values; "
                                  f"other columns have {n}", safe_name(k))
            cols[k] = vals
        self._rows_guard(n or 0, key)
        return cols, n

    def _expected_cols(self) -> str:
        names = ", ".join(repr(safe_name(n)) for n in self.names[:20])
        return f"[{names}{', ...' if len(self.names) > 20 else ''}]"

    # -- values ---------------------------------------------------------------------------
    def _check(self, cols: dict, n: int) -> dict[str, list]:
        for k in cols:
            if k not in self._name_set:
                raise ClientError(422, "unknown_column", f"unknown column {safe_name(k)!r}; the model expects "
                                  f"{self._expected_cols()}", safe_name(k))
        out = {}
        for col in self.columns:
            vals = cols.get(col.name)
            if vals is None:
                if col.required:
                    raise ClientError(422, "missing_column", f"required column {safe_name(col.name)!r} is missing",
                                      safe_name(col.name))
                out[col.name] = [None] * n
                continue
            out[col.name] = self._check_values(col, vals)
        return out

    def _bad(self, col: Column, i: int, value) -> ClientError:
        if value is None:
            return ClientError(422, "null_value", f"column {safe_name(col.name)!r} is required but row {i} is null",
                               safe_name(col.name))
        return ClientError(422, "wrong_type", f"column {safe_name(col.name)!r} row {i}: expected {_expected(col.kind)}, "
                           f"got {_type_name(value)}", safe_name(col.name))

    def _check_values(self, col: Column, vals: list) -> list:
        kind = col.kind
        required = col.required
        if kind in ("double", "float"):
            for i, v in enumerate(vals):
                t = type(v)
                if t is float:
                    if not math.isfinite(v):  # unreachable with the strict parser; kept for direct callers
                        raise ClientError(422, "non_finite", f"column {safe_name(col.name)!r} row {i}: "
                                          "NaN and Infinity are not accepted", safe_name(col.name))
                elif t is int:
                    if abs(v) > 2**1023:
                        raise ClientError(422, "out_of_range", f"column {safe_name(col.name)!r} row {i}: "
                                          "number out of range", safe_name(col.name))
                elif v is None and not required:
                    pass
                else:
                    raise self._bad(col, i, v)
            return vals
        if kind in ("long", "integer"):
            lo, hi = _INT_BOUNDS[kind]
            out = vals
            for i, v in enumerate(vals):
                t = type(v)
                if t is int:
                    if v < lo or v > hi:
                        raise ClientError(422, "out_of_range", f"column {safe_name(col.name)!r} row {i}: integer "
                                          f"out of the {kind} range", safe_name(col.name))
                elif t is float:
                    if not math.isfinite(v) or v != int(v) or v < lo or v > hi:
                        raise ClientError(422, "wrong_type", f"column {safe_name(col.name)!r} row {i}: expected "
                                          "an integer number, got a fractional or out-of-range number",
                                          safe_name(col.name))
                    if out is vals:
                        out = list(vals)
                    out[i] = int(v)
                elif v is None and not required:
                    pass
                else:
                    raise self._bad(col, i, v)
            return out
        if kind == "boolean":
            for i, v in enumerate(vals):
                if type(v) is bool or (v is None and not required):
                    continue
                raise self._bad(col, i, v)
            return vals
        if kind == "datetime":
            import numpy as np

            out = []
            for i, v in enumerate(vals):
                if v is None and not required:
                    out.append(None)
                    continue
                if type(v) is not str:
                    raise self._bad(col, i, v)
                try:
                    out.append(np.datetime64(v, "ns"))
                except ValueError:
                    raise ClientError(422, "wrong_type", f"column {safe_name(col.name)!r} row {i}: expected an "
                                      "ISO-8601 datetime string", safe_name(col.name)) from None
            return out
        # string, binary: JSON strings
        for i, v in enumerate(vals):
            if type(v) is str or (v is None and not required):
                continue
            raise self._bad(col, i, v)
        return vals
