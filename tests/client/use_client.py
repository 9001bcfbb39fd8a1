"""Drives Gatehouse through a client generated from its own OpenAPI document.

Usage: python3 use_client.py BASE_URL EMAIL

`gatehouse_client` must be importable: the package openapi-python-client
generated, unedited, from the live /api/v1/openapi.json. This script only
calls it: log in through the local mailbox, create a key, list the keys,
verify the key. It prints one JSON object with what it saw, for the Rust
test (tests/api/openapi.rs) to check, and exits non-zero on any surprise.
"""

import json
import re
import sys

from gatehouse_client import AuthenticatedClient, Client
from gatehouse_client.api.auth import get_me, send_login_code, verify_login_code
from gatehouse_client.api.dev import list_mailbox_messages
from gatehouse_client.api.keys import create_api_key, get_api_key, list_api_keys
from gatehouse_client.api.verify import verify_api_key
from gatehouse_client.models import (
    CreatedKey,
    CreateKeyBody,
    CreateKeyBodyScopesItem,
    KeyList,
    KeyView,
    Mailbox,
    MeView,
    RateLimitInput,
    SendCodeAnswer,
    SendCodeBody,
    TokenPair,
    VerifyBody,
    VerifyCodeBody,
    VerifyInvalid,
    VerifyValid,
)


def expect(value, kind, what):
    if not isinstance(value, kind):
        raise SystemExit(f"{what}: expected {kind.__name__}, got {value!r}")
    return value


def main(base_url: str, email: str) -> None:
    public = Client(base_url=base_url, raise_on_unexpected_status=True)

    sent = send_login_code.sync(client=public, body=SendCodeBody(email=email))
    expect(sent, SendCodeAnswer, "send-code")

    mailbox = expect(list_mailbox_messages.sync(client=public), Mailbox, "mailbox")
    message = next((m for m in mailbox.items if m.to == email), None)
    if message is None:
        raise SystemExit(f"no mail to {email} in the mailbox")
    code = re.search(r"^\s*(\d{6,10})\s*$", message.body, re.MULTILINE)
    if code is None:
        raise SystemExit("no code in the login mail")

    tokens = verify_login_code.sync(
        client=public, body=VerifyCodeBody(email=email, code=code.group(1))
    )
    tokens = expect(tokens, TokenPair, "verify-code")
    session = AuthenticatedClient(
        base_url=base_url, token=tokens.access_token, raise_on_unexpected_status=True
    )

    me = expect(get_me.sync(client=session), MeView, "me")
    project_id = me.memberships[0].project.id

    created = create_api_key.sync(
        client=session,
        x_project_id=project_id,
        body=CreateKeyBody(
            name="generated client",
            scopes=[CreateKeyBodyScopesItem("keys:read")],
            rate_limit=RateLimitInput(limit=50, window_secs=60),
        ),
    )
    created = expect(created, CreatedKey, "create key")

    listed = expect(
        list_api_keys.sync(client=session, x_project_id=project_id), KeyList, "list keys"
    )
    fetched = expect(
        get_api_key.sync(id=created.id, client=session), KeyView, "get key"
    )

    verdict = verify_api_key.sync(
        client=public, body=VerifyBody(key=created.plaintext_key, scopes=["keys:read"])
    )
    verdict = expect(verdict, VerifyValid, "verify")
    refused = verify_api_key.sync(
        client=public, body=VerifyBody(key=created.plaintext_key, scopes=["webhooks:manage"])
    )
    refused = expect(refused, VerifyInvalid, "verify without the scope")

    # The key itself is a credential the same client accepts.
    as_key = AuthenticatedClient(
        base_url=base_url, token=created.plaintext_key, raise_on_unexpected_status=True
    )
    listed_by_key = expect(list_api_keys.sync(client=as_key), KeyList, "list keys as the key")

    print(
        json.dumps(
            {
                "user_id": tokens.user.id,
                "project_id": project_id,
                "key_id": created.id,
                "key_prefix": created.prefix,
                "plaintext_starts": created.plaintext_key[:8],
                "created_scopes": list(created.scopes),
                "listed_ids": [k.id for k in listed.items],
                "listed_total": listed.pagination.total,
                "fetched_name": fetched.name,
                "fetched_rate_limit": [fetched.rate_limit.limit, fetched.rate_limit.window_secs],
                "verify_valid": verdict.valid,
                "verify_key_id": verdict.key_id,
                "verify_project_id": verdict.project_id,
                "verify_remaining": verdict.ratelimit.remaining,
                "refused_code": refused.code.value,
                "listed_by_key_ids": [k.id for k in listed_by_key.items],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
