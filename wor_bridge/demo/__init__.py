"""The demo and its simulated counterparties (ships with the package: ``wor-bridge demo``).

``scenario`` runs the whole path on loopback; ``welfare`` is the simulated welfare system (FHIR
and signed webhook); ``notified_pull`` the simulated notified-pull receiver; ``fhir_server`` the
``SimulatedFhirServer`` they (and the tests) use as welfare FHIR endpoint and GP record.
"""
