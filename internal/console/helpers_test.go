package console_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
)

func newJar() (http.CookieJar, error) { return cookiejar.New(nil) }

func ioCopy(w io.Writer, resp *http.Response) (int64, error) { return io.Copy(w, resp.Body) }
