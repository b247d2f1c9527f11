// Command training-operator runs the Kubeflow training-operator's PyTorchJob
// controller (github.com/kubeflow/training-operator, v1) against a kubeconfig, as
// kubetune's scale benchmark's peer (bench/operator_scale.py).
//
// It is upstream's cmd/training-operator.v1 main cut to what the benchmark needs:
// the same manager and the same PyTorchJob reconciler, plus flags for the client's
// QPS and burst (upstream takes controller-runtime's 20/30 with no flag), and
// without the webhook server and its certificate rotation (the benchmark
// registers no webhook configuration, so the API server would never call it).
package main

import (
	"flag"
	"os"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kubeflowv1 "github.com/kubeflow/training-operator/pkg/apis/kubeflow.org/v1"
	controllerv1 "github.com/kubeflow/training-operator/pkg/controller.v1"
	"github.com/kubeflow/training-operator/pkg/controller.v1/common"
)

func main() {
	var metricsAddr, probeAddr, namespace string
	var threads, burst int
	var qps float64
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "metrics address (0: off)")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.StringVar(&namespace, "namespace", "", "namespace to watch (default: all)")
	flag.IntVar(&threads, "controller-threads", 1, "PyTorchJob reconcile workers (upstream default 1)")
	flag.Float64Var(&qps, "kube-api-qps", 20, "client QPS; negative turns client-side rate limiting off")
	flag.IntVar(&burst, "kube-api-burst", 30, "client burst")
	opts := zap.Options{StacktraceLevel: zapcore.DPanicLevel}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	setupLog := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(kubeflowv1.AddToScheme(scheme))

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(qps), burst
	var cacheOpts cache.Options
	if namespace != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{namespace: {}}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		Cache:                  cacheOpts,
	})
	if err != nil {
		setupLog.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	setup := controllerv1.SupportedSchemeReconciler[kubeflowv1.PyTorchJobKind]
	if err := setup(mgr, common.GenNonGangSchedulerSetupFunc(), threads); err != nil {
		setupLog.Error(err, "unable to create the PyTorchJob controller")
		os.Exit(1)
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))
	setupLog.Info("starting manager", "qps", qps, "burst", burst, "threads", threads)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "problem running manager")
		os.Exit(1)
	}
}
