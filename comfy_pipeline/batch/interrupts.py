"""Notice SIGINT/SIGTERM even when the exception they raise gets lost.

Dagster turns a termination signal into an exception raised wherever the main thread happens to be. When that
is inside a garbage-collector callback (SQLAlchemy registers weakref callbacks), Python prints "Exception
ignored" and the exception is gone, so a run could keep waiting on the GPU server after it was terminated.
`interrupt_flag()` chains a handler in front of the current one that first sets an Event, which code polling a
remote server can check and act on (cancel its prompts, then raise).
"""

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set from the main thread; nothing to chain
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handler(signum, frame):
        earlier = previous.get(signum)
        if earlier == signal.SIG_IGN:
            return
        flag.set()
        if callable(earlier):
            earlier(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    for sig in SIGNALS:
        signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, earlier in previous.items():
            signal.signal(sig, earlier)
