"""FHIR R4 ⇄ STU3 conversion for Dutch platforms that speak STU3 (pure, no I/O).

``convert`` is the entry (``to_stu3``, ``to_r4``); ``element`` is the schema-driven walk the
resource families share; ``request`` (ServiceRequest ⇄ ReferralRequest, Task), ``consent`` and
``event`` (Observation, Communication) hold each family's differences and sources.
"""
