package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

// newSliceLogsCommand is `slices logs ID`: the Nomad logs of the slice's
// current allocation, through the admin API (the operator needs no Nomad
// token or network path to the nodes).
func newSliceLogsCommand(g *globals) *cobra.Command {
	var follow, stderr bool
	var tail int
	var task string
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Print a slice's logs from its current Nomad allocation (--follow, --stderr, --tail N, --task NAME)",
		Args:  oneArg("slice id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := idArg(args, "slice")
			if err != nil {
				return err
			}
			if tail < 0 {
				return usageErrorf("--tail %d: want a number of lines ≥ 0", tail)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			if follow {
				q.Set("follow", "true")
			}
			if stderr {
				q.Set("stderr", "true")
			}
			if tail > 0 {
				q.Set("tail", strconv.Itoa(tail))
			}
			if task != "" {
				q.Set("task", task)
			}
			// A follow ends with the operator (Ctrl-C cancels the context)
			// or with the allocation; a plain read ends at the log's end.
			resp, err := c.stream(cmd.Context(), http.MethodGet, fmt.Sprintf("/admin/api/slices/%d/logs?%s", id, q.Encode()), nil, 0)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(cmd.OutOrStdout(), resp.Body); err != nil && !errors.Is(err, context.Canceled) && cmd.Context().Err() == nil {
				return fmt.Errorf("slice %d logs: %w", id, err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until interrupted")
	cmd.Flags().BoolVar(&stderr, "stderr", false, "stderr instead of stdout")
	cmd.Flags().IntVar(&tail, "tail", 0, "start with the last N lines (0: the whole log)")
	cmd.Flags().StringVar(&task, "task", "", "the task of the allocation (default: its first, \"slice\")")
	return cmd
}
