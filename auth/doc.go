// Package auth guards Tandem's HTTP API with bearer tokens.
//
// Tokens live in a file, one per line:
//
//	# comment
//	<token or its sha256 hex digest>  <name>  <rights>
//
// where rights is a comma-separated subset of submit, read, impersonate and
// admin (admin implies the other three). The name is also the user the token
// acts as: a token without impersonate creates generations, sessions and
// feedback only as that user, and reads only that user's (Principal.ActAs,
// Principal.Owns); a token with it (a backend serving many end users) may
// name any user. A 64-character hexadecimal first field is taken as
// the SHA-256 digest of the token, so the file need not hold the secret
// itself: `printf %s "$TOKEN" | sha256sum` gives it. Anything else is the
// token itself, at least MinTokenLen bytes long.
//
// A request presents its token as "Authorization: Bearer <token>", or, for
// the monitoring UI in a browser, as the password of HTTP Basic
// authentication (the user name is ignored). The token is hashed and the
// digest compared with every known digest in constant time, so neither the
// comparison nor the position of a match leaks through timing.
//
// Missing or unknown tokens get 401 with a WWW-Authenticate challenge; a
// known token without the route's right gets 403. Both carry the API's error
// body in OpenAI's shape (package apierror): authentication_error and
// permission_error.
//
// With no token file the Authenticator is open: every request is allowed
// with every right, and a warning is logged at start. That is the laptop
// default; Options.RequireTokens turns it into a start-up error instead.
//
// Store.WatchSIGHUP reloads the file on SIGHUP; a file that fails to parse
// is logged and the previous tokens stay in force.
package auth
