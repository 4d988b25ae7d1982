package herald_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// internalPackages are the module's packages a host never imports: their
// names (app, adapters, outbox) collide with the host's own packages, and
// their types include adapters whose methods (claim, record) take part in
// sending.
var internalPackages = []string{"app", "adapters", "outbox"}

// TestAHostNeedsOnlyPackageHerald: no exported function, method, field or
// type of package herald names a type of app, adapters or outbox, except
// through an alias declared in package herald (herald.Inbox = app.Inbox),
// so a host configures, runs and operates Herald importing herald,
// notification and migrations only.
func TestAHostNeedsOnlyPackageHerald(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	var leaks []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		internal := map[string]bool{} // local names of the internal packages in this file
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, p := range internalPackages {
				if path == "github.com/herald-push/herald/"+p {
					internal[p] = true
					if imp.Name != nil {
						internal[imp.Name.Name] = true
					}
				}
			}
		}
		leak := func(what string, n ast.Node) {
			if n == nil {
				return
			}
			ast.Inspect(n, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok {
					if id, ok := sel.X.(*ast.Ident); ok && internal[id.Name] {
						leaks = append(leaks, what+" uses "+id.Name+"."+sel.Sel.Name)
					}
				}
				return true
			})
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() || (d.Recv != nil && !ast.IsExported(receiverName(d.Recv))) {
					continue
				}
				leak(d.Name.Name, d.Type)
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						if !s.Name.IsExported() || s.Assign.IsValid() { // aliases are the way in
							continue
						}
						if st, ok := s.Type.(*ast.StructType); ok {
							for _, field := range st.Fields.List {
								for _, n := range field.Names {
									if n.IsExported() {
										leak(s.Name.Name+"."+n.Name, field.Type)
									}
								}
							}
							continue
						}
						leak(s.Name.Name, s.Type)
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								leak(n.Name, s.Type)
							}
						}
					}
				}
			}
		}
	}
	assert.Empty(t, leaks)
}

func receiverName(recv *ast.FieldList) string {
	typ := recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	if id, ok := typ.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}
