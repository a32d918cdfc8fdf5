"""Protocol endpoints: parse the HTTP request, call the service in ``idp.oauth``, answer."""
