"""Application services: the rules of the domain, called by thin HTTP edges.

A service function takes the unit-of-work session, the acting principal and
validated input; it checks authorisation (``server.services.policy``), calls
repositories, writes the audit, and never commits.
"""
