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
		var p ptrArray[textElem]
		if s != nil {
			p = make(ptrArray[textElem], len(s))
			for j := range s {
				p[j] = textElem(s[j])
			}
		}
		add(fmt.Sprintf("text/%d", i), pgtype.TextArrayOID, "text[]", s, p)
	}
	for i, s := range ints {
		var p ptrArray[int8Elem]
		if s != nil {
			p = make(ptrArray[int8Elem], len(s))
			for j := range s {
				p[j] = int8Elem(s[j])
			}
		}
		add(fmt.Sprintf("int8/%d", i), pgtype.Int8ArrayOID, "bigint[]", s, p)
	}
	for i, s := range uuids {
		var p ptrArray[uuidElem]
		if s != nil {
			p = make(ptrArray[uuidElem], len(s))
			for j := range s {
				p[j] = uuidElem(s[j])
			}
		}
		add(fmt.Sprintf("uuid/%d", i), pgtype.UUIDArrayOID, "uuid[]", s, p)
	}
	for i, s := range times {
		var p ptrArray[timestamptzElem]
		if s != nil {
			p = make(ptrArray[timestamptzElem], len(s))
			for j := range s {
				p[j] = timestamptzElem(s[j])
			}
		}
		add(fmt.Sprintf("timestamptz/%d", i), pgtype.TimestamptzArrayOID, "timestamptz[]", s, p)
	}
	return cases
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
