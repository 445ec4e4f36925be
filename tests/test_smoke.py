def test_registered_user_reads_own_profile(stack, owner):
    response = stack.call("GET", "/v1/auth/me", token=owner.access_token)
    assert response.status_code == 200
    assert response.json()["email"] == owner.email
