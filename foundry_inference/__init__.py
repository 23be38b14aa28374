"""foundry-inference: deploy and serve AI models behind the Foundry inference API."""

__version__ = "0.1.0"
