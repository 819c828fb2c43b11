"""The generated code in memos/v1 matches proto/ (run `make proto` when this fails)."""

from memos.api.codegen import stale_files


def test_generated_protobuf_code_is_fresh() -> None:
    assert stale_files() == []
