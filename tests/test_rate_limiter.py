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


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError, match="per_second must be positive"):
        RateLimiter(0)
    with pytest.raises(ValueError, match="per_second must be positive"):
        RateLimiter(-1)
    assert RateLimiter(45).per_second == 45


def test_an_idle_limiter_grants_the_present_not_a_past_slot():
    fake = FakeTime()
    limiter = RateLimiter(10, clock=fake.clock, sleep=fake.sleep)
    assert limiter.acquire() == 0.0
    fake.now = 100.0  # idle for a while
    assert limiter.acquire() == 100.0
    assert limiter.acquire() == pytest.approx(100.1, abs=1e-5)


def test_a_slot_exactly_at_the_deadline_is_still_granted():
    fake = FakeTime()
    limiter = RateLimiter(1, clock=fake.clock, sleep=fake.sleep)
    limiter.pause(30)
    assert limiter.acquire(deadline=30.0) == 30.0


def test_a_zero_or_negative_pause_holds_nobody():
    fake = FakeTime()
    limiter = RateLimiter(10, clock=fake.clock, sleep=fake.sleep)
    fake.now = 5.0
    limiter.pause(0)
    limiter.pause(-3)
    assert limiter.paused_until == 5.0 and limiter.acquire() == 5.0
    limiter.pause(10)
    limiter.pause(2)  # a shorter pause does not shorten the longer one
    assert limiter.paused_until == 15.0
