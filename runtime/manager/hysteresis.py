"""The manager's hysteresis: when a point counts as failing, when a step up may be tried, and the backoff
that bars points as costly as one that just failed. Python 3.6+, stdlib.

Steps down happen at once (a miss rate above `miss_target`, or three misses in a row); steps up only after
`up_dwell_s` and `window` calls at a point with the miss rate under half the target, at most 20 looks a second.
Each failure bars points as costly as the failed one for a backoff that starts at `backoff_s` and doubles
while failures keep coming (up to `max_backoff_s`), so a point that looks feasible but keeps failing is
probed rarely instead of oscillating.
"""

LOOK_UP_EVERY_S = 0.05


class Hysteresis(object):
    def __init__(self, window=16, up_dwell_s=0.5, miss_target=0.03, miss_alpha=0.02, backoff_s=1.0,
                 max_backoff_s=8.0):
        self.window, self.up_dwell_s = int(window), up_dwell_s
        self.miss_target, self.miss_alpha = miss_target, miss_alpha
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.t_switch, self.n_at_cur = 0.0, 0
        self.reset()

    def reset(self):
        """A new budget: no bar, the first backoff, no misses on record."""
        self.ceiling, self.until = None, 0.0
        self.backoff, self.last_fail = self.backoff_s, -1e18
        self.miss_rate, self.consec = 0.0, 0
        self.next_up = 0.0

    def switched(self, now):
        self.t_switch, self.n_at_cur = now, 0
        self.calm()

    def calm(self):
        self.miss_rate, self.consec = 0.0, 0

    def observe(self, miss):
        """One call at the current point; miss: over the latency budget (None: no latency budget)."""
        self.n_at_cur += 1
        if miss is not None:
            self.miss_rate += self.miss_alpha * ((1.0 if miss else 0.0) - self.miss_rate)
            self.consec = self.consec + 1 if miss else 0

    def failing(self):
        return self.consec >= 3 or self.miss_rate > self.miss_target

    def may_look_up(self, now):
        if (now >= self.next_up and now - self.t_switch >= self.up_dwell_s and self.n_at_cur >= self.window
                and self.miss_rate <= 0.5 * self.miss_target):
            self.next_up = now + LOOK_UP_EVERY_S
            return True
        return False

    def barred(self, cost, now):
        return self.ceiling is not None and now < self.until and cost >= self.ceiling

    def failed(self, cost, now):
        """The point of this cost failed: bar it and anything as costly, longer if failures keep coming."""
        self.backoff = (min(self.backoff * 2, self.max_backoff_s) if now - self.last_fail < 4 * self.backoff
                        else self.backoff_s)
        self.last_fail = now
        self.ceiling, self.until = cost, now + self.backoff
