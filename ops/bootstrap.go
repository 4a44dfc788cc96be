package ops

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/password"
	"github.com/slicehub/slicehub/postgres/bootstrap"
)

// newCreateAdminCommand makes the first admin and an admin API key for it,
// straight in PostgreSQL: before it there is no admin to call the admin API
// with. The key is printed once; the database keeps only its hash.
func newCreateAdminCommand(g *globals) *cobra.Command {
	var url, email, keyName string
	var passwordStdin, promote bool
	cmd := &cobra.Command{
		Use:   "create-admin",
		Short: "Create an admin account (or promote one with --promote) and print a new admin API key once",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			const op = "slicectl.create_admin"
			if url == "" {
				return usageErrorf("no database: set --database-url or DATABASE_URL")
			}
			norm, err := slicehub.NormalizeEmail(email)
			if err != nil {
				return usageErrorf("--email %q: %s", email, slicehub.MessageOf(err))
			}
			pw, generated := os.Getenv("SLICEHUB_ADMIN_PASSWORD"), false
			if passwordStdin {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && err != io.EOF {
					return slicehub.Wrap(op, slicehub.KindInvalid, err)
				}
				pw = strings.TrimRight(line, "\r\n")
			}
			if pw == "" && !promote {
				// A person logs in with it later; printing a strong one beats
				// asking for a weak one.
				pw, generated = randomPassword(), true
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			pg, err := bootstrap.Connect(ctx, url)
			if err != nil {
				return err
			}
			defer pg.Close(context.WithoutCancel(ctx))
			var u slicehub.User
			if promote {
				u, err = bootstrap.PromoteAdmin(ctx, pg, norm, true)
			} else {
				hash, herr := password.Hash(pw, norm)
				if herr != nil {
					return usageErrorf("password: %s", slicehub.MessageOf(herr))
				}
				u, err = bootstrap.CreateAdmin(ctx, pg, norm, hash)
			}
			if err != nil {
				if slicehub.KindOf(err) == slicehub.KindConflict {
					return withCode(ExitError, fmt.Errorf("%s already has an account: add --promote to make it an admin", norm))
				}
				if slicehub.KindOf(err) == slicehub.KindNotFound {
					return withCode(ExitUnhealthy, fmt.Errorf("no account %s to promote", norm))
				}
				return err
			}
			key, hash := slicehub.NewAdminKey()
			k, err := bootstrap.CreateAdminKey(ctx, pg, keyName, hash, u.ID)
			if err != nil {
				return err
			}
			out := struct {
				UserID   int64  `json:"user_id"`
				Email    string `json:"email"`
				KeyID    int64  `json:"key_id"`
				Key      string `json:"key"`
				Password string `json:"password,omitempty"`
			}{u.ID, u.Email, k.ID, key, ""}
			if generated {
				out.Password = pw
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "admin %s (user %d)\n", u.Email, u.ID)
			if generated {
				fmt.Fprintf(w, "password: %s\n", pw)
			}
			fmt.Fprintf(w, "admin key %d (%s), shown this once:\n%s\n", k.ID, k.Name, key)
			fmt.Fprintln(cmd.ErrOrStderr(), "keep it safe; use it with: export SLICEHUB_ADMIN_KEY=<the key above>")
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "database-url", os.Getenv("DATABASE_URL"), "gateway database URL (env DATABASE_URL)")
	cmd.Flags().StringVar(&email, "email", "", "the admin's email")
	cmd.Flags().StringVar(&keyName, "key-name", "slicectl", "a name for the new admin key")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from the first line of stdin (else SLICEHUB_ADMIN_PASSWORD, else one is generated and printed)")
	cmd.Flags().BoolVar(&promote, "promote", false, "make an existing account an admin instead of creating one")
	_ = cmd.MarkFlagRequired("email")
	return cmd
}

func randomPassword() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
