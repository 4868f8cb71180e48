"""The simulated world and entry points: device profiles, simpy timing, scenarios, runner, reports, CLI."""
