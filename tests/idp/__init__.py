"""A real OpenID Connect provider for the identity-provider tests: see ``tests.idp.provider``."""
