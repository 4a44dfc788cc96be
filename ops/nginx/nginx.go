// Package nginx holds the edge's nginx configuration: Template is the
// consul-template source that jobs/edge.nomad.hcl renders (pass it as the
// job's nginx_conf variable), and selfsigned.sh makes a certificate for a
// machine without a real one.
package nginx

import _ "embed"

// Template is slicehub.conf.ctmpl.
//
//go:embed slicehub.conf.ctmpl
var Template string
