"""The functional core: pure functions over FHIR JSON values. No network, disk, clock or logging."""
