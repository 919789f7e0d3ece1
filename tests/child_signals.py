"""Signal state for the encoder processes the tests start and then signal."""

import signal

# Every signal an encode or a sweep reacts to (USR1: job time up, USR2: submitit pre-emption).
HANDLED = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}


def reset_signals() -> None:
    """``preexec_fn`` for a child: a non-interactive shell may have passed it these signals ignored or blocked."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_DFL)
