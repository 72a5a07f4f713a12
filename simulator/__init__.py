"""A Kandji API simulator for tests, benchmarks and local runs (standard library only).

    from simulator import Fleet, KandjiSimulator
    fleet = Fleet.generate(1000, seed=7)
    with KandjiSimulator(fleet, token="t") as sim:
        requests.get(sim.api_url + "devices", headers={"Authorization": "Bearer t"})
"""
from .fleet import Fleet
from .server import Faults, KandjiSimulator, Stats

__all__ = ["Fleet", "KandjiSimulator", "Faults", "Stats"]
