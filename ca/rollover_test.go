package ca

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestStartRolloverKeyTypes(t *testing.T) {
	for _, tc := range []struct {
		from, to KeyType
		kek      bool
	}{
		{KeyECDSAP256, "", false},
		{KeyECDSAP256, KeyECDSAP384, true},
		{KeyRSA2048, KeyECDSAP256, false},
		{KeyECDSAP256, KeyRSA3072, true},
	} {
		t.Run(string(tc.from)+"->"+string(tc.to), func(t *testing.T) {
			a, st, clock := newTestAuthority(t, tc.from)
			if tc.kek {
				a.kek = newKEK(t)
			}
			old := a.Root()
			clock.Add(time.Hour)
			r, err := a.StartRollover(context.Background(), RolloverOptions{KeyType: tc.to}, "test")
			if err != nil {
				t.Fatal(err)
			}
			want := tc.to
			if want == "" {
				want = tc.from
			}
			in := r.Other
			switch {
			case !r.Cert.Equal(old.Cert):
				t.Error("the trust phase changed the issuing CA")
			case in == nil || keyTypeOf(in.PublicKey) != want:
				t.Errorf("the new CA's key: %v, want %s", in, want)
			case string(in.RawSubject) != string(old.Cert.RawSubject):
				t.Errorf("subject %s, want %s (rightca=%%same)", in.Subject, old.Cert.Subject)
			case !in.IsCA || in.MaxPathLen != 0 || !in.MaxPathLenZero || in.KeyUsage != old.Cert.KeyUsage:
				t.Errorf("extensions differ: CA %v pathlen %d/%v ku %v", in.IsCA, in.MaxPathLen, in.MaxPathLenZero,
					in.KeyUsage)
			case in.CheckSignatureFrom(in) != nil || string(in.SubjectKeyId) == string(old.Cert.SubjectKeyId):
				t.Error("the new CA is not self-signed with its own key id")
			case !in.NotBefore.Equal(t0.Add(time.Hour)) || !in.NotAfter.Equal(t0.Add(time.Hour).AddDate(RootYears, 0, 0)):
				t.Errorf("validity %s .. %s", in.NotBefore, in.NotAfter)
			}
			m, _ := st.CA(context.Background())
			if tc.kek && (m.Rollover.Other.KeyEncryption != KeyAES256GCM ||
				strings.Contains(string(m.Rollover.Other.KeyPEM), "PRIVATE KEY")) {
				t.Error("the new key is not sealed under the KEK")
			}
			if r.BundlePEM == nil || strings.Count(string(r.BundlePEM), "BEGIN CERTIFICATE") != 2 {
				t.Errorf("bundle: %s", r.BundlePEM)
			}
			_, err = a.StartRollover(context.Background(), RolloverOptions{}, "test")
			if !errors.Is(err, ErrRolloverInProgress) {
				t.Errorf("second start: %v", err)
			}
			if _, err := a.RenewRoot(context.Background(), "test"); !errors.Is(err, ErrRolloverInProgress) {
				t.Errorf("same-key renewal during a rollover: %v", err)
			}
		})
	}
}
