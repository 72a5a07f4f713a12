"""The collector: one complete snapshot per run (collector.SnapshotCollector), which devices to refresh
under the request budget (refresh), fleet-wide apps from Prism (prism_apps), and its Lambda wiring (runtime)."""
