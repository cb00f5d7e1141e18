"""The manager's predictor: the profile's costs scaled by what the running stream shows. Python 3.6+, stdlib.

The profile was measured on an idle board; these ratios carry what another workload does to it. After every
call it keeps measured / profiled p95 of the point that ran (the tail ratio, for latency budgets) and measured
/ profiled median (the mean ratio, for energy budgets) in rings of the last `window` calls, and, where a power
reader exists, an average of measured / profiled power.
"""


class Predictor(object):
    def __init__(self, p95, median, energy, power, window=16, quantile=0.9):
        self.p95, self.median, self.energy, self.power = p95, median, energy, power
        self.window, self.quantile = int(window), quantile
        self._ring = [1.0] * self.window    # measured / profiled p95
        self._ring_m = [1.0] * self.window  # measured / profiled median
        self._pos = 0
        self._n = 0
        self.power_ratio = 1.0
        self.latency_ms = self.energy_mj = self.power_w = None

    def set_budget(self, latency_ms, energy_mj, power_w):
        self.latency_ms, self.energy_mj, self.power_w = latency_ms, energy_mj, power_w

    def record(self, cur, ms, n):
        """One measured call: ms for n inputs at point cur (profiled costs are positive: check_profile)."""
        self._ring[self._pos] = ms / (n * self.p95[cur])
        self._ring_m[self._pos] = ms / (n * self.median[cur])
        self._pos = (self._pos + 1) % self.window
        if self._n < self.window:
            self._n += 1

    def record_power(self, watts, cur):
        if watts and self.power[cur]:
            self.power_ratio += 0.5 * (watts / self.power[cur] - self.power_ratio)

    def scales(self):
        """(tail, mean) slowdown: an upper quantile of recent measured/profiled-p95 latency ratios, and
        (only with an energy budget) the median of measured/profiled-median ratios; None before enough data.
        Sorting 16 numbers is the quantile here: numpy would cost more than the whole decision."""
        n = self._n
        if n < self.window // 2:
            return None, None
        srt = sorted(self._ring[:n] if n < self.window else self._ring)
        tail = srt[int(self.quantile * (len(srt) - 1))]
        if self.energy_mj is None:
            return tail, None
        srt = sorted(self._ring_m[:n] if n < self.window else self._ring_m)
        return tail, srt[len(srt) // 2]

    def feasible(self, j, m, tail, mid, n, up_from=None):
        """Is point j predicted under m x budget? Latency: the slowdown seen at the current point scales j's
        profiled p95 (multiplicative), except for a step up from point up_from, which adds the excess seen
        there instead (additive): a fixed overhead (waking up, cold caches) is not a slowdown, and a step up
        that turns out too optimistic is caught by the miss check and barred by the backoff."""
        if self.latency_ms is not None:
            s = tail if tail is not None else 1.0
            if up_from is not None:
                lat = (self.p95[j] + (s - 1.0) * self.p95[up_from]) * n
            else:
                lat = s * self.p95[j] * n
            if lat > m * self.latency_ms:
                return False
        if self.energy_mj is not None:
            en = self.energy[j] * n * self.power_ratio * (mid if mid is not None else 1.0)
            if en > m * self.energy_mj:
                return False
        if self.power_w is not None and self.power[j] * self.power_ratio > m * self.power_w:
            return False
        return True

    def predicted_ms(self, j):
        tail, _ = self.scales()
        return (tail if tail is not None else 1.0) * self.p95[j]
