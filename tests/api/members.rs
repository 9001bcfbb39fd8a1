//! SPEC section 7: projects, members, roles, project resolution.

use serde_json::json;

use crate::helpers::{send, send_body, spawn_app, TestApp, Tokens};

fn call(
    app: &TestApp,
    t: &Tokens,
    method: &str,
    path: &str,
    project: &str,
    body: Option<serde_json::Value>,
) -> crate::helpers::Resp {
    let req = app
        .authed(method, path, &t.access)
        .set("X-Project-Id", project);
    match body {
        Some(b) => send_body(req.set("Content-Type", "application/json"), &b.to_string()),
        None => send(req),
    }
}

#[test]
fn roles_decide_who_may_change_members() {
    let app = spawn_app();
    let owner = app.login("owner@acme.test");
    let project = app.first_project(&owner.access);

    let add = |t: &Tokens, email: &str, role: &str| {
        call(
            &app,
            t,
            "POST",
            "/api/v1/members",
            &project,
            Some(json!({ "email": email, "role": role })),
        )
    };
    let res = add(&owner, "member@acme.test", "member");
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.json()["user"]["email"], "member@acme.test");
    assert_eq!(res.json()["role"], "member");
    assert_eq!(add(&owner, "admin@acme.test", "admin").status, 201);
    add(&owner, "member@acme.test", "admin").assert_error(409, "conflict");
    add(&owner, "bad", "member").assert_error(422, "validation_error");
    add(&owner, "x@acme.test", "root").assert_error(422, "validation_error");

    // The invitation went out by mail.
    let mail = app.get("/api/v1/dev/mailbox").json();
    assert!(mail["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["to"] == "member@acme.test"
            && m["subject"].as_str().unwrap().contains("Personal")));

    // Invited users log in to the project they were invited to.
    let member = app.login("member@acme.test");
    let admin = app.login("admin@acme.test");
    let me = send(app.authed("GET", "/api/v1/me", &member.access)).json();
    assert_eq!(
        me["memberships"].as_array().unwrap().len(),
        1,
        "no personal project for invitees"
    );
    assert_eq!(me["memberships"][0]["project"]["id"], project.as_str());

    // A member cannot add members; an admin cannot grant owner but can add members.
    add(&member, "new@acme.test", "member").assert_error(403, "forbidden");
    add(&admin, "boss@acme.test", "owner").assert_error(403, "forbidden");
    assert_eq!(add(&admin, "helper@acme.test", "member").status, 201);

    // Role changes are for owners.
    let path = format!("/api/v1/members/{}", member.user_id);
    call(
        &app,
        &admin,
        "PATCH",
        &path,
        &project,
        Some(json!({ "role": "admin" })),
    )
    .assert_error(403, "forbidden");
    let res = call(
        &app,
        &owner,
        "PATCH",
        &path,
        &project,
        Some(json!({ "role": "admin" })),
    );
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.json()["role"], "admin");

    // The last owner can be neither demoted nor removed.
    let own = format!("/api/v1/members/{}", owner.user_id);
    call(
        &app,
        &owner,
        "PATCH",
        &own,
        &project,
        Some(json!({ "role": "admin" })),
    )
    .assert_error(409, "conflict");
    call(&app, &owner, "DELETE", &own, &project, None).assert_error(409, "conflict");
    call(&app, &admin, "DELETE", &own, &project, None).assert_error(403, "forbidden");
    assert_eq!(
        app.query_i64(&format!(
            "SELECT count(*) FROM memberships WHERE project_id = '{project}' AND role = 'owner'"
        )),
        1
    );

    // With a second owner, the first may step down.
    let admin_path = format!("/api/v1/members/{}", admin.user_id);
    assert_eq!(
        call(
            &app,
            &owner,
            "PATCH",
            &admin_path,
            &project,
            Some(json!({ "role": "owner" }))
        )
        .status,
        200
    );
    assert_eq!(
        call(
            &app,
            &owner,
            "PATCH",
            &own,
            &project,
            Some(json!({ "role": "member" }))
        )
        .status,
        200
    );

    // Removal by an owner; the list reflects it.
    let res = call(&app, &admin, "DELETE", &path, &project, None);
    assert_eq!(res.status, 200, "{}", res.body);
    call(&app, &admin, "DELETE", &path, &project, None).assert_error(404, "not_found");
    let list = call(
        &app,
        &admin,
        "GET",
        "/api/v1/members?limit=2",
        &project,
        None,
    )
    .json();
    assert_eq!(list["pagination"]["total"], 3);
    assert_eq!(list["pagination"]["pages"], 2);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    // The removed member no longer sees the project.
    call(&app, &member, "GET", "/api/v1/members", &project, None).assert_error(404, "not_found");

    for action in ["member.added", "member.role_changed", "member.removed"] {
        assert!(
            app.query_i64(&format!("SELECT count(*) FROM audit_events WHERE action = '{action}' AND project_id = '{project}'")) >= 1,
            "{action} audited"
        );
    }
}

#[test]
fn project_resolution_needs_membership_and_a_choice() {
    let app = spawn_app();
    let alice = app.login("alice@acme.test");
    let bob = app.login("bob@acme.test");
    let alices = app.first_project(&alice.access);

    // Someone else's project is indistinguishable from a missing one.
    call(&app, &bob, "GET", "/api/v1/members", &alices, None).assert_error(404, "not_found");
    call(
        &app,
        &bob,
        "GET",
        "/api/v1/members",
        "prj_doesnotexist",
        None,
    )
    .assert_error(404, "not_found");

    // With one project the header is optional.
    let res = send(app.authed("GET", "/api/v1/members", &bob.access));
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["items"][0]["user"]["email"], "bob@acme.test");

    // A second project makes the header necessary.
    let created = send_body(
        app.authed("POST", "/api/v1/projects", &bob.access)
            .set("Content-Type", "application/json"),
        r#"{"name": "  Side project  "}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["name"], "Side project");
    send(app.authed("GET", "/api/v1/members", &bob.access)).assert_error(400, "project_required");
    let list = send(app.authed("GET", "/api/v1/projects", &bob.access)).json();
    assert_eq!(list["pagination"]["total"], 2);
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["role"] == "owner"));

    send_body(
        app.authed("POST", "/api/v1/projects", &bob.access)
            .set("Content-Type", "application/json"),
        r#"{"name": "   "}"#,
    )
    .assert_error(422, "validation_error");
    for bad in ["page=0", "limit=0", "limit=101", "page=abc", "limit=-1"] {
        send(app.authed("GET", &format!("/api/v1/projects?{bad}"), &bob.access))
            .assert_error(422, "validation_error");
    }
}

#[test]
fn malformed_input_never_causes_a_server_error() {
    let app = spawn_app();
    let t = app.login("fuzz@acme.test");
    let bodies = [
        "",
        "null",
        "[]",
        "{}",
        "\"x\"",
        "{\"email\": null}",
        "{\"email\": []}",
        "{\"role\": \"owner\"}",
        "{\"email\": \"a@acme.test\", \"role\": 7}",
        "{\"name\": 1e999}",
        "{\"refresh_token\": {}}",
        "{\"email\": \"\\u0000@acme.test\", \"code\": \"\\u0000\"}",
        "\u{feff}{}",
    ];
    let routes = [
        ("POST", "/api/v1/auth/send-code"),
        ("POST", "/api/v1/auth/verify-code"),
        ("POST", "/api/v1/auth/refresh-token"),
        ("POST", "/api/v1/auth/revoke-token"),
        ("POST", "/api/v1/projects"),
        ("POST", "/api/v1/members"),
        ("PATCH", "/api/v1/members/usr_x"),
        ("DELETE", "/api/v1/members/%00"),
        ("POST", "/auth/refresh"),
    ];
    for (method, path) in routes {
        for body in bodies {
            for auth in [None, Some(t.access.as_str())] {
                let mut req = app
                    .request(method, path)
                    .set("Content-Type", "application/json");
                if let Some(token) = auth {
                    req = req.set("Authorization", &format!("Bearer {token}"));
                }
                let res = send_body(req, body);
                assert!(
                    res.status < 500,
                    "{method} {path} {body:?} -> {} {}",
                    res.status,
                    res.body
                );
            }
        }
    }
    for (name, value) in [
        ("X-Project-Id", "'; DROP TABLE projects; --"),
        ("X-Project-Id", ""),
        ("Authorization", "Bearer"),
        ("Authorization", "Bearer     "),
        ("Cookie", "gatehouse_access=; gatehouse_refresh="),
        ("Cookie", "=;=;;"),
        ("X-API-Key", "gate_pk_"),
        ("X-Forwarded-For", "not, an, ip"),
        ("Origin", "::::"),
    ] {
        let res = send(app.request("GET", "/api/v1/members").set(name, value));
        assert!(res.status < 500, "{name}: {value:?} -> {}", res.status);
    }
}
