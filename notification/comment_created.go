package notification

import "errors"

// CommentCreated is Herald's worked example of a domain event: someone
// commented on a course, and the course's author should hear about it.
type CommentCreated struct {
	CourseID       string `json:"course_id"`
	CourseTitle    string `json:"course_title"`
	CommentID      string `json:"comment_id"`
	CommenterID    string `json:"commenter_id"`
	CommenterName  string `json:"commenter_name"`
	CourseAuthorID string `json:"course_author_id"`
}

// CommentCreatedType is CommentCreated's event type.
const CommentCreatedType = "comment_created"

// EventType names the event in the outbox.
func (CommentCreated) EventType() string { return CommentCreatedType }

// Validate reports missing fields.
func (e CommentCreated) Validate() error {
	var errs []error
	for field, v := range map[string]string{
		"course_id": e.CourseID, "comment_id": e.CommentID,
		"commenter_id": e.CommenterID, "course_author_id": e.CourseAuthorID,
	} {
		if v == "" {
			errs = append(errs, &FieldError{Field: field, Err: ErrRequired})
		}
	}
	return errors.Join(errs...)
}

// NotifyCourseAuthor is the rule for CommentCreated: the course's author is
// told about a new comment, unless they wrote it themselves.
func NotifyCourseAuthor(e CommentCreated) ([]Draft, error) {
	if e.CommenterID == e.CourseAuthorID {
		return nil, nil
	}
	who := e.CommenterName
	if who == "" {
		who = "Someone"
	}
	return []Draft{{
		Recipient: e.CourseAuthorID,
		Type:      CommentCreatedType,
		Content: Content{
			Title: "New comment on " + e.CourseTitle,
			Body:  who + " commented on your course",
			Data: map[string]string{
				"course_id":  e.CourseID,
				"comment_id": e.CommentID,
			},
		},
	}}, nil
}
