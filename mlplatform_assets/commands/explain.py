"""``mlplatform explain MODEL [VERSION] --row JSON | --request-id ID``: per-feature contributions to one prediction.

The method and its limits are in lib/model/explain.py. The background is the version's stored training sample
(``drift/reference_sample.parquet``), so no data store access is needed; a logged request is read from the
prediction log, whose rows hold every model input.
"""

from __future__ import annotations

import io
import json
from typing import Any

# pandas and the explain module are imported by the functions that use them: building the CLI's parser
# (which reads add_explain_arguments) must stay cheap for every other command.


def logged_row(prediction_log: Any, model: str, request_id: str, row_index: int | None) -> tuple[dict[str, Any], str]:
    """The inputs of a logged request's row (feature -> value) and the version that answered it."""
    from mlplatform_assets.lib.model.explain import ExplainError
    from mlplatform_assets.lib.serving.predlog import META_COLUMNS, read_prediction_log

    log = read_prediction_log(prediction_log, model)
    rows = log[log["request_id"] == request_id] if len(log) else log
    if not len(rows):
        raise ExplainError(f"request id {request_id!r} is not in {model}'s prediction log")
    if row_index is None and len(rows) > 1:
        raise ExplainError(f"request {request_id!r} holds {len(rows)} rows; choose one with --row-index 0..{len(rows) - 1}")
    matching = rows[rows["row"] == (row_index or 0)]
    if not len(matching):
        raise ExplainError(f"request {request_id!r} has no row {row_index} (rows 0..{len(rows) - 1})")
    record = matching.iloc[0]
    skip = {*META_COLUMNS, "date"}
    inputs = {(c[len("input_"):] if c.startswith("input_") and c[len("input_"):] in META_COLUMNS else c): record[c]
              for c in rows.columns if c not in skip}
    return {k: (None if isinstance(v, float) and v != v else v.item() if hasattr(v, "item") else v)
            for k, v in inputs.items()}, str(record["model_version"])


def explain_version(registry: Any, model: str, version: str | None, values: dict[str, Any], *,
                    background_rows: int = 50, permutations: int = 64, seed: int = 0) -> Any:
    """Explain ``values`` (feature -> value) with ``model`` ``version`` (default: the champion): an Explanation."""
    import pandas as pd

    from mlplatform_assets.lib.model.explain import ExplainError, background_sample, explain_row, row_frame
    from mlplatform_assets.lib.monitoring.batch import REFERENCE_SAMPLE
    from mlplatform_assets.lib.spec import parse_spec

    if version is None:
        champion = registry.champion(model)
        if champion is None:
            raise ExplainError(f"model {model!r} has no champion; name a VERSION")
        version = str(champion.version)
    mv = registry.get_version(model, version)
    spec = parse_spec(registry.download_artifact(mv.run_id, "spec.yaml").decode(), f"models:/{model}/{version} spec.yaml")
    reference = pd.read_parquet(io.BytesIO(registry.download_artifact(mv.run_id, REFERENCE_SAMPLE)))
    background = background_sample(reference, background_rows, seed)
    row = row_frame(values, background)
    pipeline = registry.load_pipeline(model, version)
    return explain_row(pipeline, row, background, spec.task, spec.target.positive_class, permutations, seed,
                       model=model, version=version)


def run_explain(args: Any, registry: Any, prediction_log: Any) -> int:
    from mlplatform_assets.lib.model.explain import ExplainError, format_table

    version = args.version
    if (args.row is None) == (args.request_id is None):
        raise ExplainError("give exactly one of --row JSON or --request-id ID")
    if args.row is not None:
        try:
            values = json.loads(args.row)
        except json.JSONDecodeError as exc:
            raise ExplainError(f"--row is not valid JSON: {exc}") from None
    else:
        values, logged_version = logged_row(prediction_log, args.model, args.request_id, args.row_index)
        version = version or logged_version
    e = explain_version(registry, args.model, version, values, background_rows=args.background_rows,
                        permutations=args.permutations, seed=args.seed)
    print(json.dumps(e.as_dict(), indent=2, default=str) if args.json else format_table(e))
    return 0


def add_explain_arguments(s: Any) -> None:
    s.add_argument("model")
    s.add_argument("version", nargs="?", help="default: the version that answered --request-id, else the champion")
    s.add_argument("--row", help='the inputs as a JSON object, e.g. \'{"tenure_months": 3, "plan": "basic"}\'')
    s.add_argument("--request-id", help="explain a logged prediction (from the prediction log)")
    s.add_argument("--row-index", type=int, help="which row of a multi-row request")
    s.add_argument("--background-rows", type=int, default=50, help="training rows the output is compared with")
    s.add_argument("--permutations", type=int, default=64, help="feature orders sampled when exact is too costly")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
