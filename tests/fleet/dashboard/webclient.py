"""A small browser-like HTTPS client for the dashboard tests: keeps cookies, sends Origin.

(http.client over the fleet's real TLS; the Playwright test drives a real browser.)
"""

from __future__ import annotations

import http.client
import re
import ssl
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str

    @property
    def csrf(self) -> str:
        found = CSRF.search(self.text)
        assert found, self.text
        return found.group(1)

    def set_cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


@dataclass
class WebClient:
    port: int
    context: ssl.SSLContext
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, form: dict[str, str] | None = None, *,
                origin: str | None = "", headers: dict[str, str] | None = None) -> Answer:
        """``origin``: "" sends this server's, None sends none, else that value."""
        head = dict(headers or {})
        if self.cookies:
            head["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            head["Content-Type"] = "application/x-www-form-urlencoded"
        if method == "POST" and origin is not None:
            head["Origin"] = origin or self.origin
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context,
                                                 timeout=30)
        try:
            connection.request(method, path, body=body, headers=head)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        answer = Answer(response.status, response.headers, text)
        for line in answer.set_cookies():
            for name, morsel in SimpleCookie(line).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def login(self, password: str) -> Answer:
        page = self.get("/dashboard/login")
        return self.request("POST", "/dashboard/login",
                            {"csrf": page.csrf, "password": password})
