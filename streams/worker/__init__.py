"""The worker core: the Faust app, its agents' runtime, web endpoints, Faust corrections."""
