"""A downstream simulator: the loyalty and shipment APIs the overview calls, made unreliable.

loopwise-bench downstream-sim --port 9001 --latency-ms 50 --jitter-ms 10 --error-rate 0.1
"""

from loopwise_bench.sim.app import SimConfig, SimState, create_sim_app

__all__ = ["SimConfig", "SimState", "create_sim_app"]
