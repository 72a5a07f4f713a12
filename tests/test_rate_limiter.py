import threading

import pytest

from kandji_snapshots.errors import DeadlineExceeded
from kandji_snapshots.kandji.rate_limiter import RateLimiter


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self._lock = threading.Lock()

    def clock(self):
        with self._lock:
            return self.now

    def sleep(self, seconds):
        with self._lock:
            self.now = max(self.now, self.now + seconds)


def max_in_any_window(starts, width=1.0):
    starts = sorted(starts)
    best, left = 0, 0
    for right, start in enumerate(starts):
        while start - starts[left] >= width:
            left += 1
        best = max(best, right - left + 1)
    return best


def test_starts_never_exceed_the_ceiling_in_any_second():
    fake = FakeTime()
    limiter = RateLimiter(45, clock=fake.clock, sleep=fake.sleep)
    starts = [limiter.acquire() for _ in range(500)]
    assert max_in_any_window(starts) == 45
    assert starts[-1] == pytest.approx(499 / 45, rel=1e-4)  # and no slower than the ceiling


def test_concurrent_callers_share_one_pace():
    # 200 starts at 50 a second: four seconds' worth, so the per-second bound can be broken.
    fake = FakeTime()
    limiter = RateLimiter(50, clock=fake.clock, sleep=fake.sleep)
    starts, lock = [], threading.Lock()

    def worker():
        for _ in range(25):
            start = limiter.acquire()
            with lock:
                starts.append(start)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(starts) == 200
    assert max_in_any_window(starts) == 50
    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:])]
    assert min(gaps) >= 1 / 50 - 1e-9  # granted slots, not wall-clock arrival: exact


def test_pause_holds_every_worker():
    fake = FakeTime()
    limiter = RateLimiter(10, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire()
    limiter.pause(5.0)
    assert limiter.acquire() >= 5.0
    assert limiter.acquire() >= 5.1


def test_deadline_stops_waiting():
    fake = FakeTime()
    limiter = RateLimiter(1, clock=fake.clock, sleep=fake.sleep)
    limiter.pause(60)
    with pytest.raises(DeadlineExceeded, match="ran out of time"):
        limiter.acquire(deadline=30.0)
