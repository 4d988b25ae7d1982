package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
)

// cookieName is the console's cookie: a random value, the browser's
// console session, to which every anti-forgery token is bound. It carries
// no authority of its own: the host's authentication decides who may see
// the console.
const cookieName = "herald_console"

// tokenField is the form field that carries the anti-forgery token.
const tokenField = "csrf"

// session returns the browser's console cookie, setting a fresh one when
// the request has none or a malformed one. The cookie has no Path, so the
// browser scopes it to the directory the console is mounted at.
func (h *Handler) session(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(cookieName); err == nil && validSession(c.Value) {
		return c.Value
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	v := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: v, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overHTTPS(r),
	})
	return v
}

// overHTTPS reports whether the browser reached the console over HTTPS:
// directly, or through a proxy that terminated TLS and says so. A forged
// X-Forwarded-Proto only makes the forger's own browser withhold the
// cookie over plain HTTP.
func overHTTPS(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

// validSession reports whether v looks like a value session made.
func validSession(v string) bool {
	b, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil && len(b) == 32
}

// token is the anti-forgery token for action in the browser session
// session: an HMAC under the console's key, so that it cannot be made
// without the key, is good only with that browser's cookie, and only for
// that action (a form for one action cannot be replayed at another).
func (h *Handler) token(session, action string) string {
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte("herald-console\x00" + action + "\x00" + session))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// checkToken reports whether the POST r carries the token for action
// bound to its cookie. r's form must have been parsed.
func (h *Handler) checkToken(r *http.Request, action string) bool {
	c, err := r.Cookie(cookieName)
	if err != nil || !validSession(c.Value) {
		return false
	}
	got := r.PostForm.Get(tokenField)
	return got != "" && hmac.Equal([]byte(got), []byte(h.token(c.Value, action)))
}
