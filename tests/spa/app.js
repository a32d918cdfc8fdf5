// A single-page app as its authors would write one with oidc-client-ts at its defaults: code flow
// with PKCE, tokens in sessionStorage, refresh tokens for silent renewal. The browser test calls
// window.spa's functions and waits for document.body.dataset.state.
"use strict";

function show(state, text) {
  document.body.dataset.state = state;
  document.getElementById("status").textContent = text;
}

function tokensOf(user) {
  return { access_token: user.access_token, refresh_token: user.refresh_token, sub: user.profile.sub };
}

async function start() {
  const config = await (await fetch("/config.json")).json();
  const manager = new oidc.UserManager({
    authority: config.authority,
    client_id: config.client_id,
    redirect_uri: location.origin + "/callback",
    post_logout_redirect_uri: location.origin + "/signed-out",
    scope: "openid profile email offline_access",
    automaticSilentRenew: false,
    revokeTokensOnSignout: true,
  });

  window.spa = {
    signIn: () => manager.signinRedirect(),
    tokens: async () => tokensOf(await manager.getUser()),
    refresh: async () => tokensOf(await manager.signinSilent()),
    signOut: () => manager.signoutRedirect(),
    async userinfo() {
      const user = await manager.getUser();
      const endpoint = await manager.metadataService.getUserInfoEndpoint();
      const response = await fetch(endpoint, { headers: { Authorization: "Bearer " + user.access_token } });
      return { status: response.status, body: await response.json() };
    },
    async post(path, form) {
      const response = await fetch(config.authority + path, { method: "POST", body: new URLSearchParams(form) });
      return { status: response.status, body: await response.json() };
    },
  };

  if (location.pathname === "/callback") {
    const user = await manager.signinRedirectCallback();
    history.replaceState(null, "", "/");
    show("signed-in", "Signed in as " + user.profile.sub);
  } else if (location.pathname === "/signed-out") {
    show("signed-out", "Signed out");
  } else {
    show("ready", "Ready");
  }
}

start().catch((error) => show("failed", String(error)));
