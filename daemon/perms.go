package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// secretFiles are the data directory's files holding key material.
var secretFiles = []string{"ipsecca.db", AdminKeyFile, filepath.Join(ServerCertDir, serverKey)}

// CheckPermissions refuses a data directory whose key material others can
// read: the directories must be 0700 and the secret files 0600 (or
// stricter). Missing files are fine (they are created 0600), and a
// directory that holds no key material yet is tightened to 0700.
func CheckPermissions(dir string) error {
	if !holdsSecrets(dir) {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(dir, 0o700); err != nil {
				return fmt.Errorf("server: tighten %s to 0700: %w", dir, err)
			}
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, ServerCertDir)} {
		fi, err := os.Stat(d)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf(
				"server: directory %s is mode %04o; it holds the CA key and must be 0700 (chmod 700 %s)",
				d,
				fi.Mode().Perm(),
				d,
			)
		}
	}
	for _, f := range secretFiles {
		p := filepath.Join(dir, f)
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf(
				"server: %s is mode %04o; key material must be readable by its owner only (chmod 600 %s)",
				p,
				fi.Mode().Perm(),
				p,
			)
		}
	}
	return nil
}

func holdsSecrets(dir string) bool {
	for _, f := range secretFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}
