"""The worker core: the Faust app, its runtime, web endpoints and Faust corrections."""
