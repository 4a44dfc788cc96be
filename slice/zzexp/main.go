package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

func main() {
	dir := os.Args[1]
	extra := os.Args[2:]
	opts := []chromedp.ExecAllocatorOption{chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Headless, chromedp.UserDataDir(dir), chromedp.Flag("no-sandbox", true)}
	for _, f := range extra {
		k, v, ok := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if ok {
			opts = append(opts, chromedp.Flag(k, v))
		} else {
			opts = append(opts, chromedp.Flag(k, true))
		}
	}
	actx, c1 := chromedp.NewExecAllocator(context.Background(), opts...)
	defer c1()
	ctx, c2 := chromedp.NewContext(actx)
	defer c2()
	if err := chromedp.Do(ctx, chromedp.Navigate("http://127.0.0.1:18999/")); err != nil {
		panic(err)
	}
	fmt.Println("pid", chromedp.FromContext(ctx).Browser.Process().Pid)
	for i := 0; i < 40; i++ {
		res, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('#pane-side')?'connected':'') + '|' + (document.querySelector('div[data-ref]')?.getAttribute('data-ref')||'')`))
		fmt.Println(time.Now().Format("15:04:05.000"), res)
		if strings.HasPrefix(res, "connected") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if os.Getenv("HOLD") != "" {
		fmt.Println("holding")
		time.Sleep(60 * time.Second)
	}
	tctx, c3 := context.WithTimeout(ctx, 10*time.Second)
	defer c3()
	fmt.Println("cancel", chromedp.Cancel(tctx))
}
