"""The manager's decision policy: the ladder of points a budget chooses from, and the choice after every call.
Python 3.6+, stdlib.

Ladder: the Pareto front (runtime.profile_schema.front) of accuracy against the budgeted costs, most accurate
first. After a call: step down at once when the current point is predicted over the budget or keeps missing
(Hysteresis.failing), to the most accurate cheaper point predicted under `margin` x budget, else the cheapest;
step up one rung at a time, only when the hysteresis allows a look and the next rung is predicted under
`up_margin` x budget and is not barred by a recent failure.
"""
from runtime import profile_schema as ps

INF = float("inf")
HOLD, SWITCH, CHEAPEST_MISSES = "hold", "switch", "cheapest-misses"


class Policy(object):
    def __init__(self, points, predictor, hysteresis, margin=0.9, up_margin=0.85):
        self.points, self.pred, self.hyst = points, predictor, hysteresis
        self.margin, self.up_margin = margin, up_margin
        self.quality = [ps.quality(p) for p in points]
        self.set_axes(())

    def set_axes(self, axes):
        """The ladder for budgets on these cost axes (none: the p95 latency front)."""
        self.axes = tuple(axes)
        primary = self.axes[0] if self.axes else "latency_p95"
        P = self.points
        idx = dict((id(p), i) for i, p in enumerate(P))
        ladder = [idx[id(p)] for p in ps.front(P, self.axes or (primary,))]
        self.costp = [ps.cost(p, primary) for p in P]
        q, c = self.quality, self.costp
        ladder.sort(key=lambda i: (tuple(-v for v in q[i]), c[i] if c[i] is not None else INF))
        self.ladder = ladder  # most accurate first
        p95 = self.pred.p95
        self.cheapest = min(ladder, key=lambda i: (c[i], p95[i]))

    def best(self, m, now, n=1, cheaper_than=None, scales=None):
        """Most accurate ladder point predicted to meet m x budget (None if none)."""
        tail, mid = self.pred.scales() if scales is None else scales
        costp, feasible, barred = self.costp, self.pred.feasible, self.hyst.barred
        for j in self.ladder:
            c = costp[j]
            if cheaper_than is not None and c >= cheaper_than:
                continue
            if barred(c, now):
                continue
            if feasible(j, m, tail, mid, n):
                return j
        return None

    def choose(self, now):
        """After a new budget: the most accurate point predicted under margin x budget, or None."""
        return self.best(self.margin, now)

    def decide(self, cur, n, now):
        """(next point, HOLD | SWITCH | CHEAPEST_MISSES) after a call at cur (already recorded)."""
        scales = self.pred.scales()
        tail, mid = scales
        if self.hyst.failing() or not self.pred.feasible(cur, 1.0, tail, mid, n):
            j = self.best(self.margin, now, n, cheaper_than=self.costp[cur], scales=scales)
            if j is None:
                j = self.cheapest
            if j == cur:
                self.hyst.calm()
                return cur, CHEAPEST_MISSES
            self.hyst.failed(self.costp[cur], now)
            return j, SWITCH
        if self.hyst.may_look_up(now):
            j = self.rung_up(cur)
            if (j is not None and not self.hyst.barred(self.costp[j], now)
                    and self.pred.feasible(j, self.up_margin, tail, mid, n, up_from=cur)):
                return j, SWITCH
        return cur, HOLD

    def rung_up(self, cur):
        """The next more accurate point on the ladder (one rung at a time: a probe that fails costs little)."""
        q = self.quality[cur]
        for j in reversed(self.ladder):
            if self.quality[j] > q:
                return j
        return None
