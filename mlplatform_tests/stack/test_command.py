"""``mlplatform stack up`` pieces that need no running stack: the example spec it deploys and its arguments."""

from __future__ import annotations

import pytest

from mlplatform_assets.cli import build_parser
from mlplatform_assets.lib.spec import load_spec
from mlplatform_assets.stack import LocalStack
from mlplatform_assets.stack.command import EXAMPLE_MODELS, example_spec_text


@pytest.mark.parametrize("model", EXAMPLE_MODELS)
def test_example_spec_reads_the_stack_bucket_and_names_the_replicas(model, tmp_path):
    stack = LocalStack(tmp_path / "stack", model=model, replicas=3)
    path = stack.write_spec(model, example_spec_text(stack, model))

    spec = load_spec(path, str(tmp_path / "home"))

    assert spec.name == model
    assert spec.source.uri == stack.source_uri(model) == f"s3://mlplatform-data/sources/{model}"
    assert spec.source.example_generator is None  # the data is seeded into S3, not generated on a local disk
    assert spec.serving.endpoints == stack.replica_urls and len(set(stack.replica_urls)) == 3
    assert all(url.startswith("http://127.0.0.1:") for url in spec.serving.endpoints)


def test_stack_up_arguments():
    args = build_parser().parse_args(["stack", "up", "--model", "delivery_time", "--replicas", "3", "--days", "7"])
    assert (args.model, args.replicas, args.days, args.sensors_running, args.dir) == ("delivery_time", 3, 7,
                                                                                       False, None)
    assert build_parser().parse_args(["stack", "up"]).days is None  # seeds the model's training window
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stack", "up", "--model", "no_such_model"])
