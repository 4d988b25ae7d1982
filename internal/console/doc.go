// Package console is Herald's operator console: an http.Handler a host
// mounts behind its own authentication (Herald.Console builds it). It
// renders HTML on the server from embedded templates, works with
// JavaScript off, and loads nothing from the network: the style sheet is
// inline, allowed by its hash in the Content-Security-Policy.
//
// Pages: the overview (refreshing itself), failed deliveries with retry,
// dead letters with replay, search by user or notification id, a
// notification's timeline, and cancelling a notification's undelivered
// pushes. Every page that changes something is a confirmation page (a GET
// that changes nothing) whose form POSTs the action. A POST is refused
// unless it carries a token bound to the browser's console cookie and to
// that action (HMAC under the console's key), and unless the browser says
// it is same-origin (net/http's CrossOriginProtection).
//
// The console never sees a device token: the Operator it is given shows
// tokens as their hash. Notification titles and bodies, and dead letters'
// payloads, reach it only when the host opted in. Every value shown is
// escaped by html/template, and ids in requests are parsed strictly.
//
// The handler is safe for concurrent use.
package console
