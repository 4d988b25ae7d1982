package opscli_test

import (
	"os"
	"testing"

	"github.com/herald-push/herald/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }
