"""The OpenAlgo-shaped host: webhooks, the paper broker, the fake broker used by the rest."""
