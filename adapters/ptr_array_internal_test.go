package adapters

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// PtrArrayCases are, per array type, what a plain slice and the ptrArray
// made from it must encode alike: nil (NULL), empty ({}), and hostile
// elements.
// PtrArrayCase is one of them, for the test against Postgres.
type PtrArrayCase struct {
	Name       string
	OID        uint32
	SQLType    string
	Old, Fresh any
}

func PtrArrayCases() []PtrArrayCase {
	strs := [][]string{nil, {}, {""}, {"", ""}, {"NULL"}, {"null", "Null"}, {`"`, `\`, `{`, `}`, `,`, ` a `, "a\tb", "\n"},
		{"é✓🎉", "\u2028\u2029"}, {"\x00"}, {"a\x00b"}, {"\xff"}, {"a\xc3"}, {strings.Repeat("x", 1<<16)}}
	ints := [][]int64{nil, {}, {0}, {-1, 1, 255, 256}, {math.MaxInt64, math.MinInt64, math.MinInt64 + 1, math.MaxInt32 + 1}}
	uuids := [][][16]byte{nil, {}, {{}}, {uuid.Max}, {uuid.New(), uuid.Nil, uuid.New()}}
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		paris = time.FixedZone("CET", 3600)
	}
	times := [][]time.Time{nil, {}, {{}}, {time.Unix(0, 0)}, {time.Now()}, {time.Now().In(paris)},
		{time.Date(2024, 3, 31, 2, 30, 0, 123456789, paris)}, {time.Date(2024, 1, 1, 0, 0, 0, 999, time.FixedZone("odd", -(3*3600+1)))},
		{time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}, {time.Date(-44, 3, 15, 12, 0, 0, 0, time.UTC)},
		{time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)}}
	var cases []PtrArrayCase
	add := func(name string, oid uint32, sqlType string, old, fresh any) {
		cases = append(cases, PtrArrayCase{name, oid, sqlType, old, fresh})
	}
	for i, s := range strs {
		add(fmt.Sprintf("text/%d", i), pgtype.TextArrayOID, "text[]", s, ptrArrayOf(s, func(v string) textElem { return textElem(v) }))
	}
	for i, s := range ints {
		add(fmt.Sprintf("int8/%d", i), pgtype.Int8ArrayOID, "bigint[]", s, ptrArrayOf(s, func(v int64) int8Elem { return int8Elem(v) }))
	}
	for i, s := range uuids {
		add(fmt.Sprintf("uuid/%d", i), pgtype.UUIDArrayOID, "uuid[]", s, ptrArrayOf(s, func(v [16]byte) uuidElem { return uuidElem(v) }))
	}
	for i, s := range times {
		add(fmt.Sprintf("timestamptz/%d", i), pgtype.TimestamptzArrayOID, "timestamptz[]", s,
			ptrArrayOf(s, func(v time.Time) timestamptzElem { return timestamptzElem(v) }))
	}
	return cases
}

// ptrArrayOf is s as a ptrArray of elem's elements, nil for nil (pgx
// encodes nil as NULL and an empty array as {}).
func ptrArrayOf[S, E any](s []S, elem func(S) E) ptrArray[E] {
	if s == nil {
		return nil
	}
	p := make(ptrArray[E], len(s))
	for i, v := range s {
		p[i] = elem(v)
	}
	return p
}

// A ptrArray parameter is the bytes the plain slice it replaced was, in
// both wire formats.
func TestPtrArrayEncodesWhatThePlainSliceDid(t *testing.T) {
	t.Parallel()
	m := pgtype.NewMap()
	for _, c := range PtrArrayCases() {
		for _, format := range []int16{pgtype.BinaryFormatCode, pgtype.TextFormatCode} {
			old, oldErr := m.Encode(c.OID, format, c.Old, nil)
			fresh, freshErr := m.Encode(c.OID, format, c.Fresh, nil)
			if (oldErr == nil) != (freshErr == nil) || !bytes.Equal(old, fresh) || (old == nil) != (fresh == nil) {
				t.Errorf("%s format %d: plain %q (%v), ptrArray %q (%v)", c.Name, format, old, oldErr, fresh, freshErr)
			}
		}
	}
}
