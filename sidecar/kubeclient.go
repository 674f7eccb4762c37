package sidecar

import (
	"context"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// KubeAPI is the little of the Kubernetes API the node's Kubernetes path
// uses: read the CA's ConfigMap and its own Node, create and read its CSRs.
type KubeAPI interface {
	ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	Node(ctx context.Context, name string) (*corev1.Node, error)
	CreateCSR(
		ctx context.Context, csr *certificatesv1.CertificateSigningRequest,
	) (*certificatesv1.CertificateSigningRequest, error)
	CSR(ctx context.Context, name string) (*certificatesv1.CertificateSigningRequest, error)
}

// kubeClient is KubeAPI over client-go's REST client with a scheme of the
// two API groups it uses. Not the typed clientset: that one links and
// registers every API group of Kubernetes, and measured, it alone made the
// sidecar's resident memory 10 MiB larger on every node (BENCHMARKS.md).
type kubeClient struct {
	core, certificates *rest.RESTClient
}

// NewKubeClient returns the KubeAPI of the API server rc reaches, acting
// as rc's user (the node's own credentials).
func NewKubeClient(rc *rest.Config) (KubeAPI, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, certificatesv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	codecs := serializer.NewCodecFactory(scheme).WithoutConversion()
	client := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(rc)
		c.GroupVersion, c.APIPath, c.NegotiatedSerializer = &gv, apiPath, codecs
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		r, err := rest.RESTClientFor(c)
		if err != nil {
			return nil, fmt.Errorf("sidecar: Kubernetes client for %s: %w", gv, err)
		}
		return r, nil
	}
	var k kubeClient
	var err error
	if k.core, err = client(corev1.SchemeGroupVersion, "/api"); err != nil {
		return nil, err
	}
	if k.certificates, err = client(certificatesv1.SchemeGroupVersion, "/apis"); err != nil {
		return nil, err
	}
	return &k, nil
}

func (k *kubeClient) ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	out := new(corev1.ConfigMap)
	return out, k.core.Get().Namespace(namespace).Resource("configmaps").Name(name).Do(ctx).Into(out)
}

func (k *kubeClient) Node(ctx context.Context, name string) (*corev1.Node, error) {
	out := new(corev1.Node)
	return out, k.core.Get().Resource("nodes").Name(name).Do(ctx).Into(out)
}

func (k *kubeClient) CreateCSR(
	ctx context.Context, csr *certificatesv1.CertificateSigningRequest,
) (*certificatesv1.CertificateSigningRequest, error) {
	out := new(certificatesv1.CertificateSigningRequest)
	return out, k.certificates.Post().Resource("certificatesigningrequests").Body(csr).Do(ctx).Into(out)
}

func (k *kubeClient) CSR(ctx context.Context, name string) (*certificatesv1.CertificateSigningRequest, error) {
	out := new(certificatesv1.CertificateSigningRequest)
	return out, k.certificates.Get().Resource("certificatesigningrequests").Name(name).Do(ctx).Into(out)
}
