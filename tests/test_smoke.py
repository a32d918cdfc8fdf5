from .flows import tokens_for


def test_code_flow_in_process(http, make_client, make_user):
    client = make_client()
    user = make_user()
    tokens = tokens_for(http, client, user)
    assert {"access_token", "id_token", "refresh_token"} <= tokens.keys()
    info = http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200
    assert info.json()["sub"] == user.id
