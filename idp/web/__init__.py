"""What the hosted pages, the account API and the protocol endpoints share about a request:
its client address, its audit trail, the browser's cookies and session, rendering and the
forms' rate limits. The three surfaces import from here and never from each other."""
