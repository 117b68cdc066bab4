package apierror

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

// TestWriteIsOpenAIShape writes errors of several statuses: each body has
// message, type (by status), param (null when none) and code.
func TestWriteIsOpenAIShape(t *testing.T) {
	for status, want := range map[int]string{400: TypeInvalidRequest, 404: TypeInvalidRequest, 405: TypeInvalidRequest, 413: TypeInvalidRequest,
		401: TypeAuthentication, 403: TypePermission, 429: TypeRateLimit, 500: TypeServer, 502: TypeServer, 503: TypeServiceUnavailable} {
		for _, param := range []string{"", "max_tokens"} {
			rec := httptest.NewRecorder()
			Write(rec, status, "some_code", param, "what went wrong")
			var got map[string]map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != status || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("%d: %d %q %v", status, rec.Code, rec.Body, err)
			}
			e := got["error"]
			wantParam := any(nil)
			if param != "" {
				wantParam = param
			}
			if e["type"] != want || e["message"] != "what went wrong" || e["code"] != "some_code" || e["param"] != wantParam {
				t.Errorf("%d param %q: %v", status, param, e)
			}
			if _, ok := e["param"]; !ok {
				t.Errorf("%d: no param key: %v", status, e)
			}
		}
	}
}
