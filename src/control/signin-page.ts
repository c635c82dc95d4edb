/**
 * The page a one-time sign-in link opens (`/signin?token=...`): choose a password (the link is
 * used up and the browser is signed in), or, without a token, sign in with user and password.
 * Plain HTML and one script from this origin, under a Content-Security-Policy that allows nothing
 * else; the token is dropped from the address bar at once and never sent in a Referer
 * (Referrer-Policy: no-referrer). The web console (issue 12) replaces this page with its own.
 */

export const SIGNIN_PAGE_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

export const SIGNIN_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in to Verge</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;font-size:1rem}button{margin-top:1rem;padding:.5rem 1rem;font-size:1rem}#msg{margin-top:1rem}</style>
</head>
<body>
<main>
<h1 id="title">Sign in to Verge</h1>
<form id="form">
<div id="userRow"><label for="user">User name</label><input id="user" name="user" autocomplete="username" required></div>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<div id="repeatRow" hidden><label for="repeat">The same password again</label><input id="repeat" type="password" autocomplete="new-password"></div>
<button type="submit" id="submit">Sign in</button>
</form>
<p id="msg" role="status" aria-live="polite"></p>
</main>
<script src="/signin.js"></script>
</body>
</html>
`;

export const SIGNIN_JS = `'use strict';
(function () {
  var token = new URLSearchParams(location.search).get('token');
  // the token must not stay in the address bar, the history or a bookmark
  if (token) history.replaceState(null, '', '/signin');
  var $ = function (id) { return document.getElementById(id); };
  if (token) {
    $('title').textContent = 'Choose your password';
    $('userRow').hidden = true;
    $('user').required = false;
    $('repeatRow').hidden = false;
    $('repeat').required = true;
    $('password').autocomplete = 'new-password';
    $('submit').textContent = 'Set password and sign in';
  }
  $('form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var msg = $('msg');
    var password = $('password').value;
    if (token && password !== $('repeat').value) { msg.textContent = 'The two passwords differ.'; return; }
    var body = token ? { token: token, password: password } : { user: $('user').value, password: password };
    fetch(token ? '/api/v1/signin-link' : '/api/v1/session', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().then(function (b) {
        if (r.ok) {
          token = null;
          $('form').hidden = true;
          msg.textContent = 'Signed in as ' + b.user + ' (' + b.role + ').';
        } else {
          var detail = (b.errors || []).map(function (e) { return e.path + ': ' + e.message; }).join('; ');
          msg.textContent = b.code + ': ' + (detail || b.msg);
        }
      });
    }).catch(function (e) { msg.textContent = 'Verge did not answer: ' + e.message; });
  });
})();
`;
