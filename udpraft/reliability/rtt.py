"""Round-trip time estimate and retransmission timeout, per RFC 6298.

The first sample R sets SRTT = R and RTTVAR = R/2; later samples move them by
RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R| and SRTT = 7/8 SRTT + 1/8 R. The timeout is
RTO = SRTT + max(G, 4 RTTVAR), clamped to [rto_s_min, rto_s_max]. RFC 6298 asks for a
1 s floor; a LAN cluster would then wait far too long, so the floor is a parameter.

Karn's rule (RFC 6298 §5.3 / Karn & Partridge) is the caller's job: only messages sent
exactly once give samples, because an ACK for a retransmitted id cannot say which copy it
answers. Exponential backoff is also the caller's (per message, see endpoint.py).
"""

from __future__ import annotations

_ALPHA = 0.125
_BETA = 0.25
_K = 4.0


class RttEstimator:
    """SRTT/RTTVAR/RTO of one peer, in seconds."""

    __slots__ = (
        "granularity_s",
        "rto_s",
        "rto_s_max",
        "rto_s_min",
        "rttvar_s",
        "samples",
        "srtt_s",
    )

    def __init__(
        self,
        rto_s_initial: float,
        rto_s_min: float,
        rto_s_max: float,
        granularity_s: float = 0.001,
    ) -> None:
        if not 0 < rto_s_min <= rto_s_max:
            raise ValueError("need 0 < rto_s_min <= rto_s_max")
        self.rto_s_min = rto_s_min
        self.rto_s_max = rto_s_max
        self.granularity_s = granularity_s
        self.rto_s = min(max(rto_s_initial, rto_s_min), rto_s_max)
        self.srtt_s: float | None = None
        self.rttvar_s = 0.0
        self.samples = 0

    def sample(self, rtt_s: float) -> None:
        """Fold in one measured round trip (seconds); negative values are ignored."""
        if rtt_s < 0:
            return
        srtt = self.srtt_s
        if srtt is None:
            srtt = rtt_s
            self.rttvar_s = rtt_s / 2
        else:
            self.rttvar_s = (1 - _BETA) * self.rttvar_s + _BETA * abs(srtt - rtt_s)
            srtt = (1 - _ALPHA) * srtt + _ALPHA * rtt_s
        self.srtt_s = srtt
        self.samples += 1
        rto = srtt + max(self.granularity_s, _K * self.rttvar_s)
        self.rto_s = min(max(rto, self.rto_s_min), self.rto_s_max)
