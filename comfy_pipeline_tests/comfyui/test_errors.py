"""The error tree: transient versus permanent is one category on the exceptions, asked the same way everywhere."""

import pytest

from comfy_pipeline.comfyui import answers
from comfy_pipeline.comfyui.errors import (
    AuthenticationError,
    ComfyUIError,
    DownloadError,
    ExecutionError,
    NoServerConfigured,
    PromptInterrupted,
    PromptLost,
    PromptTimeout,
    ProtocolError,
    ServerError,
    ServerUnreachable,
    WorkflowValidationError,
    is_transient,
)


@pytest.mark.parametrize("error, transient", [
    (ServerUnreachable("http://gpu:8188", "connection refused"), True),
    (PromptLost("p1"), True),
    (ServerError("bad gateway", status=502), True),
    (ServerError("not found", status=404), False),
    (ServerError("no status"), False),
    (ProtocolError("wrong shape", status=200), False),
    (ProtocolError("wrong shape behind a 5xx", status=503), False),  # asking again gets the same answer
    (AuthenticationError("401"), False),
    (NoServerConfigured(), False),
    (WorkflowValidationError("bad graph"), False),
    (ExecutionError("p1", "3", "KSampler", "RuntimeError", "boom"), False),
    (PromptInterrupted("p1"), False),
    (PromptTimeout("p1", 5.0), False),
    (DownloadError("short read"), False),
    (OSError("disk full"), False),
    (None, False),
])
def test_transient_is_a_category_of_the_error(error, transient):
    assert is_transient(error) is transient
    if isinstance(error, ComfyUIError):
        assert error.transient is transient


def test_protocol_error_lives_in_errors_and_answers_re_exports_it():
    assert answers.ProtocolError is ProtocolError
    assert issubclass(ProtocolError, ServerError)


def test_server_unreachable_says_whether_the_prompt_started_from_its_constructor():
    assert ServerUnreachable("http://gpu:8188", "refused").prompt_started is None
    gone = ServerUnreachable("http://gpu:8188", "no answer", prompt_started=False)
    assert gone.prompt_started is False and "not reachable" in str(gone)


def test_execution_error_message_names_type_message_and_node_but_not_the_server_traceback():
    frames = ['  File "/srv/ComfyUI/execution.py", line 496, in execute\n    output_data = get_output_data(...)\n'
              '                  ^^^^^^^^^^^^^^^^\n',
              '  File "/srv/ComfyUI/nodes.py", line 1525, in sample\n    raise RuntimeError("CUDA error")\n']
    error = ExecutionError("p1", "57:3", "KSampler", "RuntimeError", "CUDA error: out of memory\n", frames)
    assert str(error) == "ComfyUI prompt p1 failed in node 57:3 (KSampler): RuntimeError: CUDA error: out of memory"
    assert error.server_traceback == frames
    assert "\n" not in str(error)


def test_a_hostile_server_traceback_stays_bounded():
    error = ExecutionError("p1", "1", "X", "E", "m", ["x" * 100_000] * 1000)
    assert len(error.server_traceback) <= 40 and all(len(frame) <= 4000 for frame in error.server_traceback)
