package controller

import (
	"context"
	"crypto/rand"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ironlb/ironlb/api"
)

// EnsureMemberlistSecret creates the Secret holding the speakers'
// memberlist encryption key (32 random bytes, AES-256) when it does not
// exist. An existing Secret is never overwritten: changing the key would
// split running speakers into groups that cannot hear each other.
func EnsureMemberlistSecret(ctx context.Context, client kubernetes.Interface, namespace string) (created bool, err error) {
	secrets := client.CoreV1().Secrets(namespace)
	if _, err := secrets.Get(ctx, api.MemberlistSecret, metav1.GetOptions{}); err == nil {
		return false, nil
	} else if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("reading Secret %s/%s: %w", namespace, api.MemberlistSecret, err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return false, err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: api.MemberlistSecret, Namespace: namespace},
		Data:       map[string][]byte{api.MemberlistSecretKey: key},
	}
	_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Another replica won the race; its key stands.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("creating Secret %s/%s: %w", namespace, api.MemberlistSecret, err)
	}
	return true, nil
}
