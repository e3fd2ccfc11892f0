"""Finding a test's processes by an environment mark (cell and rank processes are not the
test's descendants: they fork from a forkserver)."""

import psutil


def leftovers(mark: str) -> list:
    """Processes started with MODELOPT_TEST_MARK=mark that are still alive."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("MODELOPT_TEST_MARK") == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def signal_mask(conn) -> None:
    """Send the signals this process has blocked (a process's target, for a forkserver)."""
    import signal

    conn.send(sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))
