"""A SAML service provider built on pysaml2 (Debian python3-pysaml2), a SAML stack independent
of samlify and of Ripple. Run with /usr/bin/python3:

    pysaml2-sp.py WORKDIR IDP_METADATA_URL

It makes a key and certificate (openssl), writes its own SP metadata to WORKDIR/sp-metadata.xml
(one Single Logout endpoint, /slo, for SOAP and HTTP-POST), listens on a free loopback port and
prints one line `pysaml2 SP ready {json}`. On the first LogoutRequest it loads Ripple's IdP
metadata from IDP_METADATA_URL, then for each one:

- SOAP (text/xml): the LogoutRequest element is cut out of the SOAP Body byte for byte, because
  pysaml2's own SOAP unwrapping re-serialises it and breaks every signature (pysaml2 #551);
- HTTP-POST (a form): the SAMLRequest field, as pysaml2 receives it from a browser;

pysaml2 parses and verifies it (signature against the IdP metadata, Destination); this script
also requires that it was signed, unexpired and from the IdP in the metadata. It ends the
matching local sessions and answers a LogoutResponse signed by pysaml2 and then bound unsigned
(apply_binding cannot sign a SOAP response, pysaml2 #595): a SOAP envelope, or the auto-posting
form a browser would get.

It signs with RSA-SHA256 and a SHA-256 digest (`signing_algorithm`, `digest_algorithm` under
`service: sp:` in its config); POST /algorithms {"stock": true} makes it sign as pysaml2 7.0 does by default (RSA-SHA1),
and POST /soap-unwrapping {"native": true} makes it unwrap SOAP with pysaml2's own parser.
Test hooks: POST /sessions {"sessionIndex", "nameId"} adds a local session; GET /state returns
{"sessions": {...}, "log": [...]} with one record per LogoutRequest, verified or refused.
"""

import base64
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from saml2 import BINDING_HTTP_POST, BINDING_SOAP
    from saml2.client import Saml2Client
    from saml2.config import SPConfig
    from saml2.metadata import create_metadata_string
except ImportError as err:
    sys.stderr.write(f"pysaml2 is not installed ({err}): apt-get install python3-pysaml2\n")
    sys.exit(3)

WORKDIR, IDP_METADATA_URL = sys.argv[1], sys.argv[2]
KEY = os.path.join(WORKDIR, "sp.key")
CERT = os.path.join(WORKDIR, "sp.crt")
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
METADATA_PATH = os.path.join(WORKDIR, "sp-metadata.xml")
BASE = SLO = ""  # set in main() once the port is known
LOGOUT_REQUEST = re.compile(rb"<([A-Za-z_][\w.-]*:)?LogoutRequest[\s>].*</\1LogoutRequest>", re.S)


def sp_config(with_idp_metadata, stock_algorithms=False):
    conf = {
        "entityid": f"{BASE}/pysaml2-sp",
        "key_file": KEY,
        "cert_file": CERT,
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "accepted_time_diff": 60,
        "service": {
            "sp": {
                "endpoints": {
                    "single_logout_service": [(SLO, BINDING_SOAP), (SLO, BINDING_HTTP_POST)],
                    "assertion_consumer_service": [(f"{BASE}/acs", BINDING_HTTP_POST)],
                },
                "logout_requests_signed": True,
            }
        },
    }
    if not stock_algorithms:
        # pysaml2 7.0 signs with RSA-SHA1/SHA-1 unless its service config says otherwise
        # (top-level keys are not read for an SP); Ripple refuses SHA-1.
        conf["service"]["sp"]["signing_algorithm"] = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
        conf["service"]["sp"]["digest_algorithm"] = "http://www.w3.org/2001/04/xmlenc#sha256"
    if with_idp_metadata:
        conf["metadata"] = {"local": [with_idp_metadata]}
    config = SPConfig()
    config.load(conf)
    return config


lock = threading.Lock()
state = {"sessions": {}, "log": [], "stockAlgorithms": False, "nativeSoap": False}
clients = {}


def get_client(stock_algorithms):
    if stock_algorithms not in clients:
        path = os.path.join(WORKDIR, "idp-metadata.xml")
        if not os.path.exists(path):
            with urllib.request.urlopen(IDP_METADATA_URL) as res, open(path, "wb") as f:
                f.write(res.read())
        clients[stock_algorithms] = Saml2Client(config=sp_config(path, stock_algorithms))
    return clients[stock_algorithms]


def handle_logout(request_xml, binding, soap_envelope=None):
    """Verifies one LogoutRequest; returns (record, response_http_info)."""
    with lock:
        stock = state["stockAlgorithms"]
    sp = get_client(stock)
    if soap_envelope is not None:
        # pysaml2's own SOAP unwrapping, as an SP built on it would call it.
        parsed = sp.parse_logout_request(soap_envelope.decode(), BINDING_SOAP)
    else:
        # Parsed as HTTP-POST in both cases: the bytes are what the IdP signed.
        parsed = sp.parse_logout_request(base64.b64encode(request_xml).decode(), BINDING_HTTP_POST)
    if parsed is None:
        raise ValueError("pysaml2 did not accept the LogoutRequest")
    msg = parsed.message
    if msg.signature is None:
        raise ValueError("the LogoutRequest is not signed")
    idps = list(sp.metadata.identity_providers())
    if msg.issuer is None or msg.issuer.text.strip() not in idps:
        raise ValueError(f"Issuer {msg.issuer and msg.issuer.text} is not an IdP in the metadata {idps}")
    expiry = datetime.fromisoformat(msg.not_on_or_after.replace("Z", "+00:00")) if msg.not_on_or_after else None
    if expiry is None or expiry <= datetime.now(timezone.utc):
        raise ValueError(f"expired or no NotOnOrAfter ({msg.not_on_or_after})")
    record = {
        "verified": True,
        "binding": "soap" if binding == BINDING_SOAP else "post",
        "id": msg.id,
        "issuer": msg.issuer.text.strip(),
        "destination": msg.destination,
        "nameId": msg.name_id.text.strip() if msg.name_id is not None else None,
        "nameIdFormat": msg.name_id.format if msg.name_id is not None else None,
        "sessionIndexes": [s.text.strip() for s in msg.session_index],
        "reason": msg.reason,
        "notOnOrAfter": msg.not_on_or_after,
    }
    with lock:
        for index, name_id in list(state["sessions"].items()):
            if name_id == record["nameId"] and (not record["sessionIndexes"] or index in record["sessionIndexes"]):
                del state["sessions"][index]
    signed = sp.create_logout_response(msg, bindings=[binding], sign=True)
    signed = signed if isinstance(signed, str) else str(signed)
    if binding == BINDING_SOAP:
        info = sp.apply_binding(BINDING_SOAP, signed, response=True, sign=False)
    else:
        destination = sp.response_args(msg, [BINDING_HTTP_POST])["destination"]
        info = sp.apply_binding(BINDING_HTTP_POST, signed, destination, "", response=True, sign=False)
    return record, info


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/state":
            with lock:
                return self.reply(200, json.dumps(state), "application/json")
        self.reply(404, "", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/soap-unwrapping":
            with lock:
                state["nativeSoap"] = json.loads(body)["native"]
            return self.reply(204, "", "text/plain")
        if self.path == "/algorithms":
            with lock:
                state["stockAlgorithms"] = json.loads(body)["stock"]
            return self.reply(204, "", "text/plain")
        if self.path == "/sessions":
            entry = json.loads(body)
            with lock:
                state["sessions"][entry["sessionIndex"]] = entry["nameId"]
            return self.reply(204, "", "text/plain")
        if self.path != "/slo":
            return self.reply(404, "", "text/plain")
        soap = "xml" in (self.headers.get("content-type") or "")
        binding = BINDING_SOAP if soap else BINDING_HTTP_POST
        try:
            with lock:
                native = state["nativeSoap"]
            if soap and native:
                record, info = handle_logout(None, binding, soap_envelope=body)
            else:
                if soap:
                    found = LOGOUT_REQUEST.search(body)
                    if not found:
                        raise ValueError("no LogoutRequest in the SOAP Body")
                    request_xml = found.group(0)
                else:
                    form = urllib.parse.parse_qs(body.decode())
                    request_xml = base64.b64decode(form["SAMLRequest"][0])
                record, info = handle_logout(request_xml, binding)
        except Exception as err:  # a refusal is recorded and answered, never fatal
            with lock:
                state["log"].append({"verified": False, "binding": "soap" if soap else "post",
                                     "error": f"{type(err).__name__}: {err}"})
            fault = (f'<soap-env:Envelope xmlns:soap-env="{SOAP_NS}"><soap-env:Body><soap-env:Fault>'
                     f"<faultcode>soap-env:Client</faultcode><faultstring>LogoutRequest refused</faultstring>"
                     "</soap-env:Fault></soap-env:Body></soap-env:Envelope>")
            return self.reply(500, fault, "text/xml") if soap else self.reply(400, "refused", "text/plain")
        with lock:
            state["log"].append(record)
        if soap:
            return self.reply(200, info["data"], "text/xml; charset=utf-8")
        self.reply(200, info["data"], "text/html; charset=utf-8")


def main():
    global BASE, SLO
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", KEY, "-out", CERT,
         "-days", "2", "-subj", "/CN=pysaml2 test sp"],
        check=True, capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    BASE = f"http://127.0.0.1:{server.server_address[1]}"
    SLO = f"{BASE}/slo"
    metadata = create_metadata_string(None, config=sp_config(None))
    with open(METADATA_PATH, "wb") as f:
        f.write(metadata if isinstance(metadata, bytes) else metadata.encode())
    print("pysaml2 SP ready " + json.dumps({
        "entityID": f"{BASE}/pysaml2-sp", "sloUrl": SLO, "base": BASE, "metadataPath": METADATA_PATH,
    }), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
